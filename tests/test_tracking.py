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
