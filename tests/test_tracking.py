"""MLflow helpers against a real sqlite tracking store."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from clrdist import tracking  # noqa: E402
from clrdist.eval.metrics import EvalResult  # noqa: E402


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_run_params_metrics_and_config(uri):
    run_id = tracking.start_run(uri, "t", {"loss.temperature": 0.1, "model.head_dims": [64, 32]},
                                run_name="r1", tags={"k": "v"}, config={"loss": {"temperature": 0.1}})
    tracking.log_metrics(uri, run_id, {"train_loss": 2.0}, step=1)
    tracking.log_metrics(uri, run_id, {"train_loss": 1.5, "nan_metric": float("nan")}, step=2)
    run = tracking.get_run(uri, run_id)
    assert run["params"]["loss.temperature"] == "0.1"
    assert run["params"]["model.head_dims"] == "[64, 32]"
    assert run["tags"]["k"] == "v"
    assert run["metrics"] == {"train_loss": 1.5}  # non-finite values are skipped
    assert tracking.metric_history(uri, run_id, "train_loss") == [(1, 2.0), (2, 1.5)]
    assert tracking.download_config(uri, run_id) == {"loss": {"temperature": 0.1}}
    # mlflow ui opens the experiment in its model-training view, not the GenAI one
    exp = tracking.client(uri).get_experiment_by_name("t")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    tracking.end_run(uri, run_id)
    assert tracking.get_run(uri, run_id)["status"] == "FINISHED"


def test_eval_results_land_as_metrics_and_figures(uri, tmp_path):
    run_id = tracking.start_run(uri, "t", {})
    fig = plt.figure()
    plt.plot([0, 1], [0, 1])
    tracking.log_eval(uri, run_id, {"lct": EvalResult(metrics={"lct_auc": 0.9}, figures={"roc.png": fig})})
    assert tracking.get_run(uri, run_id)["metrics"]["lct_auc"] == pytest.approx(0.9)
    art = tracking.client(uri).list_artifacts(run_id, "eval/lct")
    assert [a.path for a in art] == ["eval/lct/roc.png"]
    # artifacts live beside the database, not in the working directory
    assert tracking.get_run(uri, run_id)["artifact_uri"].startswith(tracking.artifact_root(uri))


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri("sqlite:///sub/m.db") == f"sqlite:///{tmp_path / 'sub' / 'm.db'}"
    assert (tmp_path / "sub").is_dir()


@pytest.mark.parametrize("bad", ["mlruns", "file:///tmp/mlruns"])
def test_file_stores_are_refused_with_a_clear_error(bad):
    with pytest.raises(tracking.TrackingError, match="sqlite:///mlflow.db"):
        tracking.resolve_uri(bad)


def test_unknown_run_is_a_clear_error(uri):
    with pytest.raises(tracking.TrackingError, match="run 'nope' not found"):
        tracking.get_run(uri, "nope")


def test_failed_runs_carry_the_reason_and_a_reopened_run_drops_it(uri):
    first = tracking.start_run(uri, "states", {}, run_name="same")
    tracking.end_run(uri, first, "FINISHED")
    newest = tracking.start_run(uri, "states", {}, run_name="same")
    tracking.end_run(uri, newest, "KILLED", reason="driver interrupted by SIGTERM", stage="training")
    run = tracking.get_run(uri, newest)
    assert run["status"] == "KILLED"
    assert run["tags"]["clrdist.failure_reason"] == "driver interrupted by SIGTERM"
    assert run["tags"]["clrdist.failure_stage"] == "training"
    assert tracking.find_run(uri, "states", "same")["run_id"] == newest  # the newest of that name
    assert tracking.find_run(uri, "states", "other") is None
    assert tracking.find_run(uri, "no-such-experiment", "same") is None
    tracking.reopen_run(uri, newest, {"clrdist.resumes": "1"})
    run = tracking.get_run(uri, newest)
    assert run["status"] == "RUNNING" and run["tags"]["clrdist.resumes"] == "1"
    assert not set(tracking.FAILURE_TAGS) & set(run["tags"])


@pytest.mark.parametrize("health, ok", [(200, True), (401, True), (404, False), (503, False)])
def test_servers_are_checked_on_their_health_endpoint(health, ok):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(health if self.path == "/health" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        if ok:
            assert tracking.check_uri(uri) == uri
        else:
            with pytest.raises(tracking.TrackingError, match=f"HTTP {health}"):
                tracking.check_uri(uri)
    finally:
        server.shutdown()
        server.server_close()


def _hold_lock(db, seconds, started):
    """Another process's exclusive lock on the database for ``seconds`` (a backup, a vacuum)."""
    import sqlite3
    import time

    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    started.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


@pytest.mark.slow
def test_a_busy_store_delays_metrics_and_never_fails_the_caller(tmp_path, caplog):
    """An exclusive lock held mid-training made rank 0's metric logging raise ("database is
    locked") and the run end FAILED: now the metrics wait in a buffer and the next call (or the
    final flush) writes them, every one, in order."""
    import threading

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    run_id = tracking.start_run(uri, "busy", {})
    tracking.log_metrics(uri, run_id, {"loss": 3.0}, step=1)
    started = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(db, 24.0, started))
    holder.start()
    started.wait(10)
    tracking.log_metrics(uri, run_id, {"loss": 2.0}, step=2)  # MLflow waits 20 s, then buffers
    assert tracking._pending[(uri, run_id)], "the metric should be waiting in the buffer"
    assert "metrics are buffered" in caplog.text
    tracking.log_metrics(uri, run_id, {"loss": 1.5}, step=3)  # no second 20 s stall: buffered
    assert len(tracking._pending[(uri, run_id)]) == 2
    tracking.flush_metrics(uri, run_id, seconds=30)  # retries until the lock is gone
    holder.join()
    tracking.log_metrics(uri, run_id, {"loss": 1.0}, step=4)
    assert tracking.metric_history(uri, run_id, "loss") == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)]
    tracking.end_run(uri, run_id)
    assert tracking.get_run(uri, run_id)["status"] == "FINISHED"


def test_a_store_gone_for_good_fails_the_run_at_the_end_with_its_reason(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    run_id = tracking.start_run(uri, "gone", {})
    tracking._pending[(uri, run_id)] = [tracking.Metric("loss", 1.0, 0, 1)]
    real = tracking._write_pending

    def unusable(key):
        raise tracking.mlflow.exceptions.MlflowException("(sqlite3.OperationalError) disk I/O error")

    tracking._write_pending = unusable
    try:
        with pytest.raises(tracking.TrackingError, match=rf"tracking store {uri}: cannot write buffered metrics: .*disk I/O error \(1 metric values of run {run_id} could not be written\)"):
            tracking.flush_metrics(uri, run_id, seconds=1)
    finally:
        tracking._write_pending = real
    assert not tracking._pending.get((uri, run_id))


def test_preflight_tells_locked_from_not_a_database(tmp_path):
    """A store locked at start was called "not a usable MLflow database ... move this one away"."""
    import threading

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.end_run(uri, tracking.start_run(uri, "x", {}))
    started = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(db, 4.0, started))
    holder.start()
    started.wait(10)
    try:
        with pytest.raises(tracking.TrackingError, match=rf"^{db}: the tracking database is locked by another process right now \(waited 1 s\); it is a valid database"):
            tracking._check_sqlite_file(uri, wait=1.0)
    finally:
        holder.join()
    tracking.check_uri(uri)  # free again
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(tracking.TrackingError, match=rf"^{garbage}: not a usable MLflow database \(file is not a database\)"):
        tracking.check_uri(f"sqlite:///{garbage}")


def test_preflight_refuses_a_read_only_store(tmp_path):
    """A read-only store passed preflight and failed after training. Root writes read-only files,
    so as root the check runs as the unprivileged user nobody (setpriv), in a folder it can read."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0:
        db = tmp_path / "mlflow.db"
        uri = f"sqlite:///{db}"
        tracking.end_run(uri, tracking.start_run(uri, "x", {}))
        db.chmod(0o444)
        with pytest.raises(tracking.TrackingError, match="the tracking store is not writable"):
            tracking.check_uri(uri)
        return
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    if not shutil.which("setpriv") or subprocess.run(
            [*drop, "-c", "import clrdist.tracking"], capture_output=True, timeout=120,
            cwd="/").returncode != 0:
        pytest.skip("running as root, and the user nobody cannot run this checkout's Python "
                    "(no setpriv, or the checkout is not readable by others)")
    d = Path(tempfile.mkdtemp(prefix="clrdist-ro-"))
    try:
        d.chmod(0o755)
        db = d / "mlflow.db"
        uri = f"sqlite:///{db}"
        tracking.end_run(uri, tracking.start_run(uri, "x", {}))
        db.chmod(0o444)
        code = ("import sys\nfrom clrdist import tracking\n"
                "try:\n    tracking.check_uri(sys.argv[1])\nexcept tracking.TrackingError as e:\n"
                "    print(e)\n    sys.exit(3)\n")
        r = subprocess.run([*drop, "-c", code, uri], capture_output=True, text=True,
                           timeout=120, cwd=d, env={**os.environ, "HOME": str(d)})
        assert r.returncode == 3, (r.stdout, r.stderr[-2000:])
        assert "the tracking store is not writable" in r.stdout and str(db) in r.stdout
        tracking.check_uri(uri)  # root may write it: the check is about who runs, not the mode
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_eval_with_a_mistyped_uri_creates_nothing(tmp_path, capsys):
    """A typo in eval --tracking-uri created directories and a new database."""
    from clrdist.cli import main

    typo = tmp_path / "typo" / "mlflwo.db"
    assert main(["eval", "0123abcd", "--tracking-uri", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such database" in err and str(typo) in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_latest_never_overwrites_a_finished_runs_final_metrics(tmp_path, capsys):
    """--latest on a FINISHED run whose final checkpoint is gone evaluated an older checkpoint
    and overwrote the run's lct_* metrics: now it refuses and the metrics stay."""
    from clrdist.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(uri, "x", {}, config={})
    tracking.log_metrics(uri, run_id, {"lct_auc": 0.91})
    older = tmp_path / "ray" / "checkpoint_000000"
    older.mkdir(parents=True)
    tracking.set_tags(uri, run_id, {"clrdist.checkpoint": str(tmp_path / "ray" / "gone"),
                                    "clrdist.ray_run_dir": str(tmp_path / "ray")})
    tracking.end_run(uri, run_id)
    assert main(["eval", run_id, "--latest", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"run {run_id}: FINISHED, and its final checkpoint" in err and "nothing was evaluated" in err
    run = tracking.get_run(uri, run_id)
    assert run["metrics"] == {"lct_auc": 0.91} and "clrdist.evaluated_checkpoint" not in run["tags"]
