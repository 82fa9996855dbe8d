"""Real driver processes, really killed: `clrdist train` in a subprocess with its own local Ray
cluster; SIGKILL / SIGTERM it mid-training; check the MLflow run's state, that no process of
that cluster outlives it, and that rerunning the same command continues the same run: the
same weights, optimiser state and loss curve as the run uninterrupted (tests/_continuity.py).
"""

import os
import re
import signal
import subprocess

import pytest
import torch
from _continuity import RESUME_SETS, assert_same_run, driver_argv, json_summary
from _waiting import wait_for

from clrdist import tracking
from clrdist.cli import main
from clrdist.data.store import open_store
from clrdist.train import checkpoint

pytestmark = pytest.mark.integration

def quiet_argv(stores, tmp, *more):
    """`clrdist train` on the toy splits with no evaluation during or after training."""
    return driver_argv(stores, tmp, "eval.every_epochs=null", "eval.lct=false", *more)


def driver_with_a_checkpoint(argv, tmp, registered=True):
    """A `clrdist train` process with a checkpoint (``registered``: one Ray Train has registered,
    which a resumed run restores; under load the controller registers them late), and the
    processes below it (its Ray cluster)."""
    with open(tmp / "driver.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    written = checkpoint_registered if registered else \
        (lambda tmp: list((tmp / "ray").glob("*/checkpoint_*/meta.json")))
    wait_for(lambda: written(tmp) or proc.poll() is not None, 600, "a checkpoint")
    assert proc.poll() is None, f"the driver ended ({proc.returncode}) too early: " \
        + (tmp / "driver.log").read_text()[-2000:]
    return proc, descendants(proc.pid)


def descendants(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every process below ``pid``, read from /proc."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                rest = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                table[int(d)] = (int(rest[1]), int(rest[19]))
            except (OSError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (pp, _) in table.items() if pp in frontier} - {p for p, _ in found}
        found |= {(p, table[p][1]) for p in frontier}
    return found


def alive(procs: set[tuple[int, int]]) -> set[int]:
    out = set()
    for pid, start in procs:
        try:
            rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            if int(rest[19]) == start and rest[0] != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


def checkpoint_registered(tmp):
    """Ray Train writes this once it has registered a checkpoint of the run."""
    return list((tmp / "ray").glob("*/checkpoint_manager_snapshot.json"))


def the_run(uri):
    c = tracking.client(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0].info.run_id


def test_killed_driver_is_marked_killed_leaves_no_ray_process_and_the_same_command_resumes(
        toy_splits, tmp_path, ddp_reference):
    argv = driver_argv(toy_splits, tmp_path, *RESUME_SETS, "tracking.run_name=resume-me")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, cluster = driver_with_a_checkpoint(argv, tmp_path)
    assert len(cluster) >= 5  # gcs, raylet, dashboard, agents, workers, the watchdog ...
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # -- the watchdog marks the run KILLED and no process of that cluster survives ---------------
    run_id = the_run(uri)
    wait_for(lambda: tracking.get_run(uri, run_id)["status"] == "KILLED", 120, "status KILLED")
    run = tracking.get_run(uri, run_id)
    assert "SIGKILL" in run["tags"]["clrdist.failure_reason"]
    wait_for(lambda: not alive(cluster), 60, f"processes {sorted(alive(cluster))} to end")

    # -- eval refuses the unfinished run unless asked for its latest checkpoint --------------------
    ckpt, meta = checkpoint.latest_checkpoint(run["tags"]["clrdist.ray_run_dir"])
    killed_at = meta["step"]
    assert main(["eval", run_id, "--tracking-uri", uri]) == 2
    assert main(["eval", run_id, "--latest", "--tracking-uri", uri, "--json"]) == 0
    after = tracking.get_run(uri, run_id)
    assert 0.5 < after["metrics"]["lct_auc"] <= 1.0
    assert after["tags"]["clrdist.evaluated_checkpoint"] == str(ckpt)

    # -- the same command continues the same run from its last checkpoint, to the full length ------
    again = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json_summary(again.stdout)
    assert summary["run_id"] == run_id and summary["resumed"] is True
    # from the newest checkpoint Ray Train had registered: under load it registers a written
    # one (killed_at) late, so the step may be an earlier one, never step 0
    resumed_at = int(re.search(r"resumed from step (\d+)", again.stdout + again.stderr)[1])
    assert 0 < resumed_at <= killed_at and resumed_at % 6 == 0
    run = tracking.get_run(uri, run_id)
    assert run["status"] == "FINISHED" and run["tags"]["clrdist.resumes"] == "1"
    assert "clrdist.failure_reason" not in run["tags"]
    total = 2 * (open_store(toy_splits / "train.zarr").n // 64)
    state, meta = checkpoint.load(summary["checkpoint"])
    assert meta["step"] == total and meta["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    steps = {s for s, _ in tracking.metric_history(uri, run_id, "train_loss")}
    assert max(steps) == total - total % 2 and steps >= set(range(killed_at + 2, total, 2))

    # -- continuity: the same command never interrupted ends with the same run -------------------
    cfg = checkpoint.load_model(ddp_reference.checkpoint_path)[1]
    assert_same_run(summary["checkpoint"], ddp_reference.checkpoint_path, cfg, uri, run_id,
                    ddp_reference.tracking_uri, ddp_reference.run_id)


def test_sigterm_marks_the_run_killed_with_the_reason(toy_splits, tmp_path):
    argv = quiet_argv(toy_splits, tmp_path, "optim.epochs=4", "checkpoint.every_steps=2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, cluster = driver_with_a_checkpoint(argv, tmp_path, registered=False)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    run = tracking.get_run(uri, the_run(uri))
    assert run["status"] == "KILLED"
    assert run["tags"]["clrdist.failure_reason"] == "driver interrupted by SIGTERM"
    assert run["tags"]["clrdist.failure_stage"] == "training"
    wait_for(lambda: not alive(cluster), 60, f"processes {sorted(alive(cluster))} to end")
    assert " is KILLED, rerun the same command to resume" in (tmp_path / "driver.log").read_text()


def test_ray_start_failure_marks_the_run_failed(toy_splits, tmp_path):
    (tmp_path / "not_a_dir").write_text("")
    argv = quiet_argv(toy_splits, tmp_path)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RAY_TMPDIR": str(tmp_path / "not_a_dir")})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "Ray did not start: NotADirectoryError" in r.stderr
    run = tracking.get_run(f"sqlite:///{tmp_path / 'mlflow.db'}",
                           the_run(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert run["status"] == "FAILED"
    assert run["tags"]["clrdist.failure_stage"] == "ray_start"
    assert run["tags"]["clrdist.failure_reason"].startswith("NotADirectoryError")
