"""Failures after the MLflow run is opened leave it FAILED with the reason, never RUNNING:
a non-finite loss in training (and no checkpoint after it), an error in the evaluation
after training (clrdist.pipeline).

Real Ray cluster, real MLflow sqlite store, real stores; signals and Ray start-up failures are in
test_runs_resume.py (they need a driver process of their own).
"""

import pytest
import torch
from _train_toys import CONFIGS, tiny_config, tiny_overrides

from clrdist import tracking
from clrdist.cli import main
from clrdist.pipeline import train_and_evaluate
from clrdist.train import checkpoint

pytestmark = pytest.mark.integration


def runs(uri):
    c = tracking.client(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_non_finite_loss_stops_training_fails_the_run_and_keeps_the_last_finite_checkpoint(
        ray_cluster, toy_splits, tmp_path, capsys):
    """A learning rate that blows the weights up: the loss is finite at step 1 and not at
    step 2; training stops there, the run is FAILED naming the step, the newest checkpoint is
    step 1's with finite weights."""
    sets = [*tiny_overrides(toy_splits, tmp_path), "optim.lr=1e30", "checkpoint.every_steps=1",
            "eval.every_epochs=null"]
    rc = main(["train", str(CONFIGS / "demo.yaml"), *[a for o in sets for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err.split("clrdist: error:")[-1]
    line = [ln for ln in err.splitlines() if ln.startswith("clrdist: error:")][0]
    assert "non-finite loss at step 2" in line, line

    (run,) = runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "FAILED"
    assert "NonFiniteLoss: non-finite loss at step 2" in run.data.tags["clrdist.failure_reason"]
    assert run.data.tags["clrdist.failure_stage"] == "training"
    assert "clrdist.checkpoint" not in run.data.tags
    ckpt, meta = checkpoint.latest_checkpoint(run.data.tags["clrdist.ray_run_dir"])
    assert meta["step"] == 1
    state, _ = checkpoint.load(ckpt)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_a_failing_evaluation_fails_the_run_with_its_reason(ray_cluster, toy_splits, tmp_path):
    """The bump hunt on jet stores: no m_jj feature, found only once the evaluation reads them."""
    cfg = tiny_config(toy_splits, tmp_path, "optim.epochs=1", "eval.every_epochs=null",
                      "eval.bumphunt=true")
    with pytest.raises(KeyError, match="m_jj"):
        train_and_evaluate(cfg)
    (run,) = runs(cfg.tracking.uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["clrdist.failure_stage"] == "evaluation"
    assert run.data.tags["clrdist.failure_reason"].startswith("KeyError:")
    assert "m_jj" in run.data.tags["clrdist.failure_reason"]
    # training itself finished: its checkpoint is recorded and can be evaluated again
    assert checkpoint.load(run.data.tags["clrdist.checkpoint"])[1]["epoch"] == 1
