"""DINO and ORCA through the real pipeline: Ray Train (2 workers, gloo) -> checkpoint -> MLflow."""

import numpy as np
import pytest
import torch
from _train_toys import tiny_config

from clrdist import tracking
from clrdist.factory import build_model
from clrdist.pipeline import train_and_evaluate
from clrdist.train import checkpoint
from clrdist.train.loop import load_validation, validate
from clrdist.train.trainer import train

pytestmark = pytest.mark.integration


def test_dino_trains_and_the_teacher_is_evaluated(ray_cluster, toy_splits, tmp_path):
    cfg = tiny_config(toy_splits, tmp_path, "loss.name=dino", "model.head=dino",
                      "model.output_dim=64", "augment.local_views=[[{name: drop, params: {p: 0.5}}]]",
                      "optim.epochs=1", "eval.every_epochs=1", "eval.lct=false",
                      # fp32: after 9 steps the teacher (EMA 0.996) is within bf16's rounding of
                      # the student, and on a CPU with native bf16 (auto -> bf16) both then get
                      # the same validation LCT, so the check below could not tell them apart
                      "scaling.precision=fp32")
    result = train(cfg)
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED" and run["params"]["loss.name"] == "dino"
    assert np.isfinite(run["metrics"]["train_loss"]) and "train_teacher_entropy" in run["metrics"]
    state, meta = checkpoint.load(result.checkpoint_path)
    assert int(state["loss"]["step"]) == meta["step"] > 0  # one EMA update per optimiser step
    teacher = {k.removeprefix("teacher."): v for k, v in state["loss"].items()
               if k.startswith("teacher.")}
    model, _ = checkpoint.load_model(result.checkpoint_path)
    for k, v in model.state_dict().items():  # evaluation loads the teacher, not the student
        assert torch.equal(v, teacher[k]), k
    assert any(not torch.equal(teacher[k], state["model"][k]) for k in teacher)
    # validation during training scores the teacher too: the logged val_lct_auc is the teacher's
    val, cpu = load_validation(cfg), torch.device("cpu")
    student = build_model(cfg.model)
    student.load_state_dict(state["model"])
    assert run["metrics"]["val_lct_auc"] == pytest.approx(
        validate(None, cfg, val, cpu, model)["val_lct_auc"], abs=1e-6)
    assert run["metrics"]["val_lct_auc"] != pytest.approx(
        validate(None, cfg, val, cpu, student)["val_lct_auc"], abs=1e-6)


def test_orca_trains_and_reports_open_world_metrics(ray_cluster, toy_splits, tmp_path):
    # toy store: QCD (label 0) known, top (label 1) novel
    cfg = tiny_config(toy_splits, tmp_path, "loss.name=orca", "model.head=cosine",
                      "model.head_dims=[]", "model.output_dim=2", "optim.epochs=1",
                      "eval.every_epochs=null", "eval.lct=false", "eval.orca=true")
    result = train_and_evaluate(cfg)
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED"
    m = run["metrics"]
    assert {"train_ce", "train_pair", "train_entropy", "train_margin"} <= set(m)
    for key in ("orca_known_acc", "orca_novel_cluster_acc", "orca_all_cluster_acc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert 0.0 <= m["orca_anomaly_auc"] <= 1.0
