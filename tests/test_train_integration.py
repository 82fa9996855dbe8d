"""The real pipeline at tiny size: Zarr store -> Ray Train (2 workers, DDP/gloo) -> LCT -> MLflow.

Real Ray cluster, real MLflow sqlite store, real Zarr stores on disk; asserts on the MLflow run's
metrics and on the checkpoint.
"""


import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from _train_toys import CONFIGS, tiny_config

from clrdist import tracking
from clrdist.cli import main
from clrdist.data.store import open_store
from clrdist.factory import build_model
from clrdist.pipeline import train_and_evaluate
from clrdist.train import checkpoint
from clrdist.train.trainer import train

pytestmark = pytest.mark.integration

CONFIG = CONFIGS / "demo.yaml"


# Runs first in this module, before any fixture has started Ray.
def test_bad_config_is_rejected_before_ray_starts(ray_starts, toy_splits, tmp_path, capsys):
    rc = main(["train", str(CONFIG), "--set", f"data.train_store={tmp_path / 'missing.zarr'}",
               "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "data.train_store: " in err and "missing.zarr" in err and "Traceback" not in err
    assert not (tmp_path / "m.db").exists()  # no MLflow run was opened either
    assert ray_starts == []  # and no Ray cluster was started


# Small sizes for the downstream evaluations `clrdist eval` runs on the tiny stores.
SMALL_EVALS = ("eval.options={nplm: {n_ref: 300, n_data: 100, n_sig: 30, n_toys_null: 12, "
               "n_toys_sig: 6, M: 50}, anomaly: {ae_epochs: 5}, cwola: {n_repeats: 1}, "
               "baselines: {efp_max_samples: 100, supervised_max_epochs: 1}}")


def test_two_worker_ddp_run_end_to_end(ray_cluster, toy_splits, tmp_path, capsys):
    cfg = tiny_config(toy_splits, tmp_path, SMALL_EVALS)
    result = train_and_evaluate(cfg)

    # -- the MLflow run: params, per-step metrics, evaluation ----------------------------------
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED"
    assert run["params"]["loss.temperature"] == "0.1"
    assert run["params"]["scaling.num_workers"] == "2"
    assert run["tags"]["mlflow.runName"] == f"{cfg.name}-nt_xent-seed{cfg.seed}"  # what it is
    n_train = open_store(toy_splits / "train.zarr").n
    steps_per_epoch = n_train // (64 * 2)
    history = tracking.metric_history(result.tracking_uri, result.run_id, "train_loss")
    assert [s for s, _ in history] == list(range(2, 2 * steps_per_epoch + 1, 2))
    assert all(np.isfinite(v) for _, v in history)
    lct_auc = run["metrics"]["lct_auc"]
    assert 0.5 < lct_auc <= 1.0
    assert run["metrics"]["lct_inv_eps_b_at_0.5"] >= 1.0
    assert run["tags"]["clrdist.checkpoint"] == result.checkpoint_path
    # validation LCT during training, logged against the epoch
    val = tracking.metric_history(result.tracking_uri, result.run_id, "val_lct_auc")
    assert [s for s, _ in val] == [1, 2] and all(0.0 <= v <= 1.0 for _, v in val)
    # ... next to its references, logged once before the first step, and the learning
    # diagnostics of the global batch at every logged step
    for ref in ("val_lct_init_auc", "val_lct_raw_auc"):
        hist = tracking.metric_history(result.tracking_uri, result.run_id, ref)
        assert [s for s, _ in hist] == [0] and 0.5 <= hist[0][1] <= 1.0, ref
    for key in ("train_pos_top1", "train_alignment", "train_uniformity", "train_z_std",
                "train_z_eff_rank", "train_rep_eff_rank"):
        hist = tracking.metric_history(result.tracking_uri, result.run_id, key)
        assert [s for s, _ in hist] == [s for s, _ in history], key
    top1 = [v for _, v in tracking.metric_history(result.tracking_uri, result.run_id,
                                                    "train_pos_top1")]
    assert all(0.0 <= v <= 1.0 for v in top1)
    assert run["tags"]["clrdist.collapse"] in ("true", "false")
    # the final LCT next to the untrained encoder and the raw inputs on the same samples
    assert run["metrics"]["lct_init_n_test"] == run["metrics"]["lct_n_test"]
    assert 0.5 < run["metrics"]["lct_init_auc"] <= 1.0
    assert 0.5 < run["metrics"]["lct_raw_auc"] <= 1.0
    assert run["metrics"]["lct_init_auc"] != run["metrics"]["lct_auc"]

    # -- checkpoints by the cadence (default every 30 minutes) and at the end: not per epoch -----
    written = sorted(p for p in Path(run["tags"]["clrdist.ray_run_dir"]).glob("checkpoint_*")
                     if p.is_dir())  # not Ray Train's checkpoint_manager_snapshot.json
    assert [p.name for p in written] == [Path(result.checkpoint_path).name]

    # -- the checkpoint: model, optimiser, both ranks' stream positions, config ------------------
    state, meta = checkpoint.load(result.checkpoint_path)
    assert meta["step"] == 2 * steps_per_epoch and meta["epoch"] == 2
    assert meta["config"]["data"]["train_store"] == str(toy_splits / "train.zarr")
    assert {"model", "optimizer", "scheduler"} <= set(state)
    assert checkpoint.load_stream_state(result.checkpoint_path, 0) is not None
    assert checkpoint.load_stream_state(result.checkpoint_path, 1) is not None
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])  # strict: every key matches
    model2, cfg2 = checkpoint.load_model(result.checkpoint_path)
    assert cfg2.loss.temperature == cfg.loss.temperature

    # -- the same evaluation again through the CLI logs into the same run -------------------
    rc = main(["eval", result.run_id, "--lct", "--json", "--tracking-uri", result.tracking_uri])
    assert rc == 0
    again = tracking.get_run(result.tracking_uri, result.run_id)["metrics"]["lct_auc"]
    assert again == pytest.approx(lct_auc, abs=1e-9)  # deterministic given the checkpoint

    # -- every other evaluation, through the CLI, into the same run with its plots ------------
    capsys.readouterr()
    rc = main(["eval", result.run_id, "--baselines", "--cwola", "--nplm", "--anomaly", "--json",
               "--tracking-uri", result.tracking_uri])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = tracking.get_run(result.tracking_uri, result.run_id)["metrics"]
    for key in ("baseline_raw_auc", "baseline_jet_obs_auc", "baseline_efp_auc",
                "baseline_supervised_auc", "cwola_linear_auc_f_1", "nplm_dof",
                "nplm_z_chi2_median", "anomaly_znorm_auc", "anomaly_ae_auc"):
        assert key in metrics and key in printed, key
    assert 0.5 < metrics["baseline_jet_obs_auc"] <= 1.0  # jet mass separates the toy classes
    artifacts = {a.path for a in tracking.client(result.tracking_uri).list_artifacts(
        result.run_id, "eval")}
    assert {"eval/lct", "eval/baselines", "eval/cwola", "eval/nplm", "eval/anomaly"} <= artifacts


@pytest.mark.parametrize("zero_stage", [2])
def test_deepspeed_engine_trains_with_gloo(ray_cluster, toy_splits, tmp_path, zero_stage):
    cfg = tiny_config(toy_splits, tmp_path, "scaling.engine=deepspeed", f"scaling.zero_stage={zero_stage}",
                      "optim.epochs=1", "eval.every_epochs=null", "eval.lct=false")
    result = train(cfg)
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED" and run["tags"]["clrdist.engine"] == "deepspeed"
    losses = [v for _, v in tracking.metric_history(result.tracking_uri, result.run_id, "train_loss")]
    assert len(losses) >= 2 and all(np.isfinite(losses))
    model, _ = checkpoint.load_model(result.checkpoint_path)  # full model state on rank 0
    x = torch.randn(4, 50, cfg.model.input_dim).abs()  # the config's input features
    mask = torch.ones(4, 50, dtype=torch.bool)
    rep = model.represent(x, mask)
    assert rep.shape == (4, cfg.model.model_dim) and torch.isfinite(rep).all()
    # ZeRO 1/2: each of the 2 ranks' optimiser shard is in the checkpoint, for a resume
    shards = [checkpoint.load_rank_state(result.checkpoint_path, r) for r in range(2)]
    if zero_stage == 0:
        assert shards == [None, None]
    else:
        assert [s["world_size"] for s in shards] == [2, 2]
        assert all(s["optimizer"]["state"] for s in shards)


def test_killed_worker_is_replaced_and_the_run_resumes(ray_cluster, toy_splits, tmp_path):
    """Kill a training worker after a mid-epoch checkpoint; the run must resume and finish."""
    import os
    import signal
    import threading
    import time

    from ray.util.state import list_actors

    # 2 x 37 steps of 2 x 16 jets, a checkpoint every 12 steps (and at epoch ends), the loss
    # logged every 2 steps
    cfg = tiny_config(toy_splits, tmp_path, "optim.epochs=2", "data.batch_size=16",
                      "checkpoint.every_steps=12", "scaling.max_failures=1", "eval.lct=false",
                      "eval.every_epochs=null", "tracking.run_name=killed-worker")
    uri = tracking.resolve_uri(cfg.tracking.uri)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=train(cfg)), daemon=True)
    thread.start()

    # When to kill, so that the replaced workers must redo steps that were already logged:
    # - after Ray Train has registered a checkpoint (its snapshot file exists), so the new
    #   workers restore one instead of starting over;
    # - right after the workers logged a step 2 to 6 steps past a checkpoint step (a multiple
    #   of 12; the epoch-end one, 37, is odd and never logged): the restored checkpoint is at or
    #   before the last one they wrote, so the logged steps after it come again, and the next
    #   checkpoint is 6 or more steps away from the kill.
    # Killing at the snapshot is too early (the workers wait for the controller at a checkpoint,
    # so nothing past it is logged yet); killing after a state-API call of seconds is too late
    # on a busy machine (the run is over). The bound only turns a hang into a failure.
    def registered():
        return list((tmp_path / "ray").glob("*/checkpoint_manager_snapshot.json"))

    def last_logged() -> int:
        try:
            run = tracking.find_run(uri, cfg.tracking.experiment, "killed-worker")
            steps = [s for s, _ in tracking.metric_history(uri, run["run_id"], "train_loss")]
        except Exception:  # the database or the run is being created
            return 0
        return max(steps, default=0)

    def training_workers():
        alive = list_actors(address=ray.get_runtime_context().gcs_address,
                            filters=[("state", "=", "ALIVE")])
        return [a.pid for a in alive if a.class_name == "RayTrainWorker"]

    give_up = time.monotonic() + 900
    workers: list[int] = []
    while len(workers) < 2 and thread.is_alive() and time.monotonic() < give_up:
        workers = training_workers()  # the state API takes seconds: asked before training runs
        time.sleep(0.2)
    assert workers, "no live training worker to kill"
    killed_after = None
    while thread.is_alive() and time.monotonic() < give_up:
        step = last_logged()
        if step % 12 in (2, 4, 6) and registered():
            os.kill(workers[-1], signal.SIGKILL)
            killed_after = step
            break
        time.sleep(0.05)
    assert killed_after, "training ended before a step past a registered checkpoint was logged"
    thread.join(timeout=300)
    result = out["result"]
    n_train = open_store(toy_splits / "train.zarr").n
    state, meta = checkpoint.load(result.checkpoint_path)
    assert meta["step"] == 2 * (n_train // 32) and meta["epoch"] == 2
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED"
    # steps logged twice: the replaced worker group redid them, starting after a checkpoint
    # (the steps logged before the first checkpoint, at step 12, are never redone)
    steps = [s for s, _ in tracking.metric_history(result.tracking_uri, result.run_id, "train_loss")]
    redone = {s for s in steps if steps.count(s) > 1}
    assert redone and min(redone) > 12 and killed_after in redone, (killed_after, steps)


@pytest.mark.slow  # ~5 minutes: generation, training and every evaluation of the demo
def test_demo_learns_on_pythia_jets_and_keeps_the_console_quiet(tmp_path):
    """`clrdist demo` as a user runs it (its own process and Ray cluster, log_to_driver on) on
    Pythia 8 top and QCD jets (8000 per class, the demo's recipe): the trained representation
    beats the same encoder untrained on the LCT with bootstrap errors that do not overlap (an
    untrained encoder cannot pass: it is the reference), every evaluation the demo promises is in
    its MLflow run, and the console has the epoch lines, the table and the verdict while FastJet's
    banner, Ray Train's reports and Ray's token notice are in demo.log. Toy jets are no test of
    this: the recipe does not help on them (docs/learning.md)."""
    pytest.importorskip("pythia8mc")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "clrdist.cli", "demo", "--data", "pythia", "--jets-per-class",
         "8000", "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, timeout=1200, env={**env, "COLUMNS": "80"}, cwd=tmp_path)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == "pythia" and summary["learned"] is True
    # measured at 10000 per class: 0.963 +- 0.003 trained; untrained over init seeds 0-11 0.9474
    # +- 0.0037 (max 0.9530, bootstrap +- 0.004); raw 0.73. The margin: above the best of the
    # five untrained seeds (8000 per class: 0.9607 - 0.0033 vs 0.9533), which no untrained seed meets
    assert summary["lct_auc"] - summary["lct_auc_std"] > summary["lct_init_auc_max"]
    assert summary["lct_inv_eps_b_at_0.5"] > summary["lct_init_inv_eps_b_at_0.5"]
    assert summary["lct_auc"] > summary["lct_raw_auc"] + 0.1
    run = tracking.get_run(summary["tracking_uri"], summary["run_id"])
    m = run["metrics"]
    assert m["lct_auc"] == pytest.approx(summary["lct_auc"])
    assert m["lct_init_n_seeds"] == 5 and m["lct_init_auc_min"] < m["lct_init_auc_max"]
    assert {"cwola_init_linear_auc_f_0.1", "cwola_raw_linear_auc_f_0.1",
            "cwola_sup_linear_auc_f_0.1", "nplm_init_z_emp_median", "nplm_raw_z_emp_median",
            "nplm_sup_z_emp_median"} <= set(m)
    # the supervised row's searches are filled (its representation's CWoLa and NPLM)
    sup_row = next(r for r in summary["rows"] if r["name"].startswith("supervised, same"))
    assert sup_row["CWoLa AUC (f=0.1)"] != "-" and sup_row["NPLM median Z (empirical)"] != "-"
    for key in ("lct_init_auc", "lct_raw_auc", "baseline_jet_obs_auc", "baseline_efp_auc",
                "baseline_supervised_auc", "baseline_supervised_best_epoch",
                "cwola_linear_auc_f_1", "nplm_dof", "nplm_raw_dof", "val_lct_auc",
                "val_lct_init_auc", "train_pos_top1"):
        assert key in m, key
    assert "cwola_linear_auc_std_f_0.1" in m  # the CWoLa cells carry their repeats' error
    assert [line["name"] for line in summary["lines"]] == ["verdict", "CWoLa", "NPLM", "wall time"]
    assert run["tags"]["clrdist.collapse"] == "false"

    # -- the console: clrdist's lines, the table and the verdict; the rest in demo.log ------------
    assert "the trained representation beats every untrained initialisation" in console
    # the table has five columns: at 80 columns rich wraps the row names, so look for their
    # first line ("same encoder," / "untrained (5" ... as the demo prints them)
    for row in ("same encoder,", "untrained (5", "jet mass +", "supervised,"):
        assert row in console, row
    assert summary["run_id"] in console and "mlflow ui --backend-store-uri" in console
    log = (out / "demo.log").read_text()
    assert str(Path(out / "demo.log").resolve()) in console.replace("\n", "")
    epochs = run["params"]["optim.epochs"]
    last = f"epoch {epochs}/{epochs}"
    assert "epoch 1/" in console and console.count(last) == 1
    assert console.index("3/4 training") < console.index(last) < console.index("4/4 evaluation")
    assert "MLflow run" in console
    for chatter in ("FastJet release", "Reporting training result", "Token authentication",
                    "PreemptionWatcher"):
        assert chatter not in console, chatter
    for chatter in ("FastJet release", "Reporting training result"):
        assert chatter in log, chatter


@pytest.mark.slow  # ~1 minute: two trainings of 1 epoch and the demo's evaluations on toy jets
def test_demo_trains_at_several_seeds_and_judges_each(tmp_path):
    """`clrdist demo --train-seeds 2` (its own process and Ray cluster, toy jets: mechanics, not
    learning): a second MLflow run at the next seed, evaluated with the LCT only on the same
    stores, a table row over both seeds, and a verdict that reads the worse of them."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "clrdist.cli", "demo", "--data", "toy", "--jets-per-class", "600",
         "--epochs", "1", "--train-seeds", "2", "--out", str(out),
         "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    seeds = summary["training_seeds"]
    assert [s["seed"] for s in seeds] == [0, 1] and seeds[0]["run_id"] == summary["run_id"]
    runs = [tracking.get_run(summary["tracking_uri"], s["run_id"]) for s in seeds]
    assert [r["params"]["seed"] for r in runs] == ["0", "1"]
    assert [r["status"] for r in runs] == ["FINISHED", "FINISHED"]
    for s, r in zip(seeds, runs, strict=True):
        assert s["lct_auc"] == pytest.approx(r["metrics"]["lct_auc"])
    assert "cwola_linear_auc_f_0.1" in runs[0]["metrics"]
    assert "cwola_linear_auc_f_0.1" not in runs[1]["metrics"]  # the extra seeds: the LCT only
    row = next(r for r in summary["rows"] if r["name"].endswith("(2 training seeds)"))
    aucs = [s["lct_auc"] for s in seeds]
    assert row["LCT AUC"].startswith(f"{np.mean(aucs):.4f} +- {np.std(aucs, ddof=1):.4f} ")
    worst = min(s["lct_auc"] - s["lct_auc_std"] for s in seeds)
    assert summary["learned"] == (worst > summary["lct_init_auc_max"])  # 5 init seeds
    assert "at each of 2 training seeds" in summary["lines"][0]["text"]


def test_demo_verdict_needs_errors_apart():
    from clrdist.demo import learned

    same = {"lct_auc": 0.94, "lct_auc_std": 0.004, "lct_init_auc": 0.94, "lct_init_auc_std": 0.004}
    assert not learned(same)  # the untrained encoder against itself
    assert not learned({**same, "lct_auc": 0.947})  # better, but within the errors
    assert learned({**same, "lct_auc": 0.95})
    # over several init seeds the trained LCT must clear the best of them, not their mean
    seeds = {**same, "lct_init_auc": 0.9474, "lct_init_auc_max": 0.9530,
             "lct_init_auc_seed_std": 0.0037}
    assert not learned({**seeds, "lct_auc": 0.955})  # above the mean, not above seed 7
    assert learned({**seeds, "lct_auc": 0.962})


@pytest.mark.parametrize("loss, extra", [
    # DarkCLR: 3 views, under bf16 autocast
    ("anomalyclr", ["augment.anomaly_view=[{name: drop, params: {p: 0.3}}]", "scaling.precision=bf16"]),
    ("supcon", []),  # labels flow from the stream to the loss
])
def test_other_losses_train_through_ray(ray_cluster, toy_splits, tmp_path, loss, extra):
    cfg = tiny_config(toy_splits, tmp_path, f"loss.name={loss}", "optim.epochs=1",
                      "eval.every_epochs=null", "eval.lct=true", *extra)
    result = train_and_evaluate(cfg)
    run = tracking.get_run(result.tracking_uri, result.run_id)
    assert run["status"] == "FINISHED" and run["params"]["loss.name"] == loss
    assert np.isfinite(run["metrics"]["train_loss"])
    if loss == "anomalyclr":  # its named terms are logged too
        assert {"train_contrastive", "train_anomaly"} <= set(run["metrics"])
    assert 0.5 < run["metrics"]["lct_auc"] <= 1.0


def test_loss_needing_an_anomaly_view_is_rejected_up_front(toy_splits, tmp_path, capsys):
    rc = main(["train", str(CONFIG), "--set", f"data.train_store={toy_splits / 'train.zarr'}",
               "--set", "data.eval_train_store=null", "--set", "data.eval_test_store=null",
               "--set", "data.val_store=null", "--set", "eval.every_epochs=null",
               "--set", "augment.slots=null",
               "--set", "loss.name=anomalyclr", "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"])
    assert rc == 2
    assert "augment.anomaly_view: loss 'anomalyclr' needs an anomaly view" in capsys.readouterr().err
