"""slurm/ray_cluster.sh on a real two-node SLURM (slurm/local_cluster.py: slurmctld and two slurmd
on this machine), the way a cluster user runs it: sbatch a training, sbatch a keep-alive cluster
and `ray job submit` a sweep to it from outside the allocation, and preemption (a signal to the
batch step, the job requeues itself, the rerun resumes).

Runs in `make test` (CI): needs root and apt-get (or slurm-wlm + munge installed), and skips,
saying why, without them or when apt cannot install them; CLRDIST_SLURM_TESTS=0 turns it off.
One SLURM (and one installation) for the module; `make test-slurm` runs only these.
"""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from _train_toys import CONFIGS, tiny_overrides

from clrdist import tracking
from clrdist.train import checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

REPO = CONFIGS.parent
SCRIPT = REPO / "slurm" / "ray_cluster.sh"


def _local_cluster_module():
    spec = importlib.util.spec_from_file_location("local_cluster", REPO / "slurm" / "local_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.environ.get("CLRDIST_SLURM_TESTS") == "0":
        pytest.skip("CLRDIST_SLURM_TESTS=0 turns the real two-node SLURM tests off")
    lc = _local_cluster_module()
    if (why := lc.unavailable()) is not None:  # not root, or neither SLURM nor apt-get
        pytest.skip(why)
    try:
        lc.install()
    except lc.InstallFailed as e:
        pytest.skip(f"local SLURM: installing {' and '.join(lc.PACKAGES)} failed: {e}")
    cluster = lc.LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2).start()
    yield cluster
    cluster.stop()


def job_env(tmp: Path, **more: str) -> dict[str, str]:
    env = dict(os.environ, CLRDIST_VENV=sys.prefix, CLRDIST_RAY_DIR=str(tmp / "ray"),
               CLRDIST_RAY_OBJECT_STORE_MB="100", RAY_JOB_STOP_WAIT_TIME_S="60",
               # a loaded 2-core machine: give Ray's start-up and health checks slack
               RAY_raylet_start_wait_time_s="120", RAY_health_check_failure_threshold="30",
               **more)
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return env


def sbatch(slurm, tmp: Path, args: list[str], command: list[str], env=None, **kw):
    cmd = ["sbatch", f"--chdir={tmp}", f"--output={tmp}/job-%j.log", "--open-mode=append",
           *args, str(SCRIPT), *command]
    return slurm.run(cmd, env={**(env or job_env(tmp)), "SLURM_CONF": str(slurm.conf)}, **kw)


@pytest.fixture
def cancel_jobs(slurm):
    """Jobs a test submitted are cancelled when it ends, passed or not (the next test needs
    the nodes)."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        slurm.run(["scancel", job], check=False)
    for job in jobs:
        wait_for(f"job {job} gone", lambda job=job: ended(slurm, job) or
                 slurm.job_state(job) == "UNKNOWN", 120)


def job_log(tmp: Path, job: str) -> str:
    p = tmp / f"job-{job}.log"
    return p.read_text() if p.exists() else ""


def ray_processes(job: str) -> list[int]:
    """Processes of this job's Ray nodes (their command lines name the job's temp dirs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"clrdist-ray-{job}-".encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def wait_for(what: str, ready, timeout: float, tmp: Path | None = None, job: str | None = None,
             slurm=None):
    """Poll ``ready`` until it returns something true; fail after ``timeout`` seconds, or at
    once when ``job`` (given with ``slurm``) has ended without it."""
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        gone = slurm is not None and ended(slurm, job)
        if gone or time.monotonic() > deadline:
            why = f"job ended {gone}" if gone else f"not after {timeout:.0f} s"
            raise AssertionError(f"{what}: {why}\n{job_log(tmp, job) if job else ''}")
        time.sleep(1)
    return value


def train_command(toy_splits, tmp: Path, *more: str) -> list[str]:
    """`-- clrdist train` of the tiny config, training only (the evaluations have their tests)."""
    sets = [*tiny_overrides(toy_splits, tmp), "eval.lct=false", "eval.every_epochs=null", *more]
    return ["--", "clrdist", "train", str(CONFIGS / "demo.yaml"),
            *[a for s in sets for a in ("--set", s)], "--no-eval", "--json"]


def requeued_and_released(slurm, job: str) -> bool:
    """True once the job was requeued (Restarts >= 1) and runs again. SLURM holds a requeued job
    ~2 minutes (Reason=BeginTime), so it is let start now (scontrol calls it StartTime), but
    not in the second of the requeue (SubmitTime): a credential made then counts as revoked and
    the job fails ("Job credential revoked"); an update to a later time waits for the next
    scheduling pass."""
    info = slurm.job_info(job)
    if int(info.get("Restarts", "0")) < 1:
        return False
    if info.get("JobState") == "PENDING":
        try:
            since = (datetime.now() - datetime.fromisoformat(info.get("SubmitTime", ""))).total_seconds()
        except ValueError:
            since = 0
        if since >= 2:
            slurm.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
        return False
    return True


def ended(slurm, job: str) -> str | None:
    state = slurm.job_state(job)
    return state if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") else None


# (a) -------------------------------------------------------------------------------------------
def test_sbatch_trains_with_workers_on_both_nodes(slurm, toy_splits, tmp_path):
    # 1 CPU per node and 2 workers of 1 CPU each: Ray must place one worker on each node
    r = sbatch(slurm, tmp_path, ["--wait", "--nodes=2", "--cpus-per-task=1"],
               train_command(toy_splits, tmp_path, "optim.epochs=1", "tracking.run_name=slurm-a"),
               env=job_env(tmp_path, CLRDIST_KEEP_RAY_TMP="1"), check=False, timeout=600)
    job = r.stdout.split()[-1]
    log = job_log(tmp_path, job)
    assert r.returncode == 0, log
    assert "2 node(s) joined" in log and "command exited with status 0" in log
    head = re.search(r"Ray head on n1 \(([\d.]+):(\d+)\)", log)
    assert head and not head.group(1).startswith("127.")  # a routable address, never loopback
    assert int(head.group(2)) == 20000 + (int(job) % 24) * 500  # the job's port block
    # the MLflow run the job wrote, finished
    uri = tracking.resolve_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracking.find_run(uri, "clrdist-demo", "slurm-a")
    assert run is not None and run["status"] == "FINISHED"
    assert len(tracking.metric_history(uri, run["run_id"], "train_loss")) >= 2
    # each node's Ray logs hold a training worker
    for node in ("n1", "n2"):
        logs = Path(f"/tmp/clrdist-ray-{job}-{node}")
        assert any(b"RayTrainWorker" in f.read_bytes()
                   for f in logs.glob("session_*/logs/worker-*")), f"no training worker on {node}"
        subprocess.run(["rm", "-rf", str(logs)], check=True)
    assert wait_for("no Ray process left", lambda: not ray_processes(job), 30)
    # the per-job token was private to the user
    token = tmp_path / "ray" / job / "token"
    assert token.stat().st_mode & 0o077 == 0 and len(token.read_text().strip()) == 64


# (b) -------------------------------------------------------------------------------------------
def sweep_spec(toy_splits, tmp: Path, name: str, temps: list[float]) -> Path:
    # trials train one epoch (val_lct_auc, the metric, after it) and evaluate nothing else
    overrides = [*tiny_overrides(toy_splits, tmp), "optim.epochs=1", "eval.lct=false"]
    spec = {"name": name, "base_config": str(CONFIGS / "demo.yaml"), "overrides": overrides,
            "space": {"loss.temperature": {"grid": temps}}, "scheduler": "fifo",
            "max_concurrent_trials": 1, "storage_path": str(tmp / "tune")}
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_keep_alive_cluster_takes_ray_job_submit_with_its_token(slurm, toy_splits, tmp_path, cancel_jobs):
    r = sbatch(slurm, tmp_path, ["--parsable", "--nodes=2", "--cpus-per-task=2"], ["--mlflow"])
    job = r.stdout.strip().split(";")[0]
    cancel_jobs.append(job)
    job_dir = tmp_path / "ray" / job
    wait_for("cluster ready", lambda: (job_dir / "ready").exists(), 300, tmp_path, job, slurm)
    info = dict(line.split("=", 1) for line in (job_dir / "cluster.env").read_text().split())
    url = info["RAY_DASHBOARD_ADDRESS"]
    assert url.startswith("http://127.0.0.1:")  # dashboard and job server on loopback
    base = 20000 + (int(job) % 24) * 500
    head_ip = info["RAY_ADDRESS"].split(":")[0]
    # the MLflow server on the head (two nodes: bound to the head address, port base + 3)
    assert info["MLFLOW_TRACKING_URI"] == f"http://{head_ip}:{base + 3}"
    client = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}

    # without the job's token the job server refuses
    bad = subprocess.run([f"{sys.prefix}/bin/ray", "job", "list", "--address", url],
                         env={**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0

    # with it, a sweep submitted from outside the allocation runs on the cluster
    spec = sweep_spec(toy_splits, tmp_path, "via-job", [0.1, 0.5])
    env = {**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": info["RAY_AUTH_TOKEN_PATH"]}
    ray = f"{sys.prefix}/bin/ray"
    sub = subprocess.run([ray, "job", "submit", "--address", url, "--no-wait",
                          "--submission-id", f"sweep-{job}", "--working-dir", str(REPO), "--",
                          "python", "tuning/sweep.py", str(spec)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]

    def job_done() -> str | None:
        # `ray job status` logs its verdict on stderr: "Job 'ID' succeeded" / "failed" / "was
        # stopped"; a job still going is "Status for job 'ID': RUNNING"
        r = subprocess.run([ray, "job", "status", "--address", url, f"sweep-{job}"], env=env,
                           capture_output=True, text=True, timeout=120)
        end = re.search(rf"Job 'sweep-{job}' (succeeded|failed|was stopped)", r.stdout + r.stderr)
        return {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}[
            end.group(1)] if end else None

    if wait_for("the sweep job", job_done, 600, tmp_path, job, slurm) != "SUCCEEDED":
        logs = subprocess.run([ray, "job", "logs", "--address", url, f"sweep-{job}"], env=env,
                              capture_output=True, text=True, timeout=120).stdout
        raise AssertionError(f"sweep job did not succeed:\n{logs[-4000:]}")
    state = json.loads((tmp_path / "tune" / "via-job" / "clrdist_sweep.json").read_text())
    uri = state["tracking_uri"]
    assert uri == info["MLFLOW_TRACKING_URI"]  # the server took the runs, not the spec's sqlite
    assert tracking.get_run(uri, state["parent_run_id"])["status"] == "FINISHED"
    children = tracking.child_runs(uri, state["parent_run_id"])
    assert sorted(float(c["params"]["loss.temperature"]) for c in children) == [0.1, 0.5]
    assert all(c["status"] == "FINISHED" for c in children)

    # scancel leaves nothing of the job's Ray cluster behind
    assert ray_processes(job)
    slurm.run(["scancel", job])
    wait_for("job ended", lambda: slurm.job_state(job) in ("CANCELLED", "COMPLETED"), 120)
    assert wait_for("no Ray process left", lambda: not ray_processes(job), 60)
    with pytest.raises(OSError):  # nor the MLflow server
        socket.create_connection((head_ip, base + 3), timeout=5).close()
    # whose store, written by the server alone, holds the sweep
    store = tracking.resolve_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(tracking.child_runs(store, state["parent_run_id"])) == 2


# (3) preemption ----------------------------------------------------------------------------------
def test_preempted_training_checkpoints_requeues_and_finishes_in_the_same_run(
        slurm, toy_splits, tmp_path, cancel_jobs):
    from clrdist.data.store import open_store

    r = sbatch(slurm, tmp_path, ["--parsable", "--requeue", "--nodes=2", "--cpus-per-task=1"],
               train_command(toy_splits, tmp_path, "optim.epochs=3", "data.batch_size=32",
                             "tracking.run_name=preempt-a"))
    job = r.stdout.strip().split(";")[0]
    cancel_jobs.append(job)
    uri = tracking.resolve_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def logged_steps() -> list[int]:
        try:  # the job creates the database: read it only once it exists and has the run
            run = tracking.find_run(uri, "clrdist-demo", "preempt-a") \
                if (tmp_path / "mlflow.db").exists() else None
            return [s for s, _ in tracking.metric_history(uri, run["run_id"], "train_loss")] \
                if run else []
        except Exception:
            return []

    wait_for("training logging", lambda: len(logged_steps()) >= 2, 300, tmp_path, job, slurm)
    slurm.run(["scancel", "--signal=USR1", "--batch", job])  # SLURM's warning signal
    wait_for("requeued and restarted", lambda: requeued_and_released(slurm, job), 300, tmp_path, job)
    assert wait_for("job ended", lambda: ended(slurm, job), 600, tmp_path, job) == "COMPLETED", \
        job_log(tmp_path, job)

    log = job_log(tmp_path, job)
    stopped = re.search(r"stop requested: checkpoint at step (\d+)", log)
    assert stopped, log
    assert "command exited with status 75" in log and f"requeueing job {job}" in log
    assert f"resumed from step {stopped.group(1)}" in log
    # one MLflow run, continued once, finished with the full number of steps
    runs = tracking.client(uri).search_runs(
        [tracking.client(uri).get_experiment_by_name("clrdist-demo").experiment_id],
        "attributes.run_name = 'preempt-a'")
    assert len(runs) == 1
    run = tracking.get_run(uri, runs[0].info.run_id)
    assert run["status"] == "FINISHED" and run["tags"]["clrdist.resumes"] == "1"
    total = 3 * (open_store(toy_splits / "train.zarr").n // (32 * 2))
    _, meta = checkpoint.load(run["tags"]["clrdist.checkpoint"])
    assert meta["step"] == total and meta["epoch"] == 3
    steps = logged_steps()
    assert sorted(set(steps)) == list(range(2, total + 1, 2))  # every logging step, no gap
    assert wait_for("no Ray process left", lambda: not ray_processes(job), 60)


def test_preempted_sweep_resumes_without_repeating_finished_trials(slurm, toy_splits, tmp_path, cancel_jobs):
    # two trials, one at a time: the first finishes before the warning, the second does not
    temps = [0.1, 0.5]
    spec = sweep_spec(toy_splits, tmp_path, "preempt-sweep", temps)
    r = sbatch(slurm, tmp_path, ["--parsable", "--requeue", "--nodes=2", "--cpus-per-task=2"],
               ["--", "python", str(REPO / "tuning" / "sweep.py"), str(spec)])
    job = r.stdout.strip().split(";")[0]
    cancel_jobs.append(job)
    state_file = tmp_path / "tune" / "preempt-sweep" / "clrdist_sweep.json"
    wait_for("sweep started", state_file.exists, 300, tmp_path, job, slurm)
    state = json.loads(state_file.read_text())
    uri, parent = state["tracking_uri"], state["parent_run_id"]

    def finished():
        return [c for c in tracking.child_runs(uri, parent) if c["status"] == "FINISHED"]

    first = wait_for("a finished trial", finished, 600, tmp_path, job, slurm)[0]
    first_end = tracking.client(uri).get_run(first["run_id"]).info.end_time
    slurm.run(["scancel", "--signal=USR1", "--batch", job])
    wait_for("requeued and restarted", lambda: requeued_and_released(slurm, job), 300, tmp_path, job)
    assert wait_for("job ended", lambda: ended(slurm, job), 600, tmp_path, job) == "COMPLETED", \
        job_log(tmp_path, job)

    log = job_log(tmp_path, job)
    assert "command exited with status 75" in log and f"requeueing job {job}" in log
    assert json.loads(state_file.read_text())["parent_run_id"] == parent  # the same parent run
    assert tracking.get_run(uri, parent)["status"] == "FINISHED"
    children = tracking.child_runs(uri, parent)
    by_trial = {c["tags"]["clrdist.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) == len(temps)  # one run per trial, none repeated
    assert all(c["status"] == "FINISHED" for c in children)
    # the trial that had finished was not run again: one epoch's metric, the same end time
    assert len(tracking.metric_history(uri, first["run_id"], "val_lct_auc")) == 1
    assert tracking.client(uri).get_run(first["run_id"]).info.end_time == first_end
    summary = json.loads([ln for ln in log.splitlines() if ln.startswith('{"sweep"')][-1])
    assert summary["resumed"] is True and summary["interrupted"] is False
