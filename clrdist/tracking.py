"""MLflow, in one place.

This is the only module that imports mlflow. Everything goes through an explicit ``run_id`` and an
``MlflowClient`` (no global "active run"), so the driver, Ray Train's rank-0 worker and the
``clrdist eval`` command can all write to the same run without sharing process state.

MLflow 3 refuses plain-directory stores: the default is ``sqlite:///mlflow.db``. Relative sqlite
paths are made absolute (Ray workers do not share the driver's working directory) and artifacts
are kept beside the database in ``mlartifacts/``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from clrdist.errors import ClrdistError

# MLflow rejects params longer than this; longer values (view lists) are truncated for display
# and the full resolved config is stored as the `config.yaml`-equivalent JSON artifact.
_MAX_PARAM = 6000
_BATCH = 900  # MLflow's log_batch accepts at most 1000 entries


class TrackingError(ClrdistError):
    """The tracking store cannot be used (bad URI, unknown run)."""


# MLflow's HTTP defaults (7 retries, backoff factor 2, 120 s timeout) turn an unreachable server
# into minutes of silence; a run logs every few steps and can afford to drop nothing but also
# needs no 4-minute stalls. Users' own settings win (setdefault); Ray workers started by a local
# cluster inherit these from the driver.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

# Tracking URI schemes MLflow 3 can log runs to (database dialects may carry a driver: mysql+pymysql)
_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def resolve_uri(uri: str) -> str:
    """Absolute sqlite URI (creating its folder); other URIs unchanged.

    ``$MLFLOW_TRACKING_URI``, when set, replaces ``uri``: a cluster job's tracking server
    (``slurm/ray_cluster.sh --mlflow`` exports it) takes every run of the job.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        raw = uri[len("sqlite:///"):]
        path = Path(raw) if raw.startswith("/") else Path.cwd() / raw
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow 3 needs a database or server URI, "
            "e.g. sqlite:///mlflow.db or http://127.0.0.1:5000"
        )
    return uri


def check_uri(uri: str, timeout: float = 5.0) -> str:
    """Resolve ``uri`` and prove the tracking store answers, within ``timeout`` seconds for servers.

    Raises TrackingError (one line, naming the URI) for an unsupported scheme, a file that is not
    a database, a database MLflow cannot open, or a server that does not answer.
    """
    uri = resolve_uri(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme {scheme!r}; use sqlite:///PATH "
                            f"or http://HOST:PORT (MLflow also takes {', '.join(_SCHEMES[3:])})")
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
        return uri
    if scheme == "sqlite":
        _check_sqlite_file(uri)
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as e:  # sqlalchemy, driver and MLflow errors alike: report the first line
        raise TrackingError(f"tracking URI {uri!r}: cannot use the tracking store: "
                            f"{_first_line(e)}") from None
    return uri


def _first_line(e: BaseException) -> str:
    text = (getattr(e, "message", None) or str(e) or type(e).__name__).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_sqlite_file(uri: str) -> None:
    path = Path(uri[len("sqlite:///"):])
    if not path.exists():
        return  # MLflow creates it
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise TrackingError(f"{path}: not a usable MLflow database ({e}); point tracking.uri at "
                            "another file or move this one away") from None


def _check_server(uri: str, timeout: float) -> None:
    """GET {uri}/health: an MLflow server answers 200 (401 / 403: there, behind authentication)."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (scheme checked above)
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return
        raise TrackingError(f"tracking URI {uri!r}: does not answer like an MLflow server "
                            f"(HTTP {e.code} {e.reason} for {url}); fix tracking.uri") from None
    except (urllib.error.URLError, OSError) as e:
        reason = str(getattr(e, "reason", None) or e)
    raise TrackingError(f"tracking URI {uri!r}: server not reachable within {timeout:g} s "
                        f"({reason}); start it (mlflow server --host 127.0.0.1) or fix tracking.uri")


def artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside the database; servers decide for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def client(uri: str) -> MlflowClient:
    """One client per tracking URI and process (rank 0 logs every few steps: no rebuild)."""
    return _client(resolve_uri(uri))


@functools.lru_cache(maxsize=16)
def _client(resolved_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=resolved_uri)


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(c: MlflowClient, uri: str, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(resolve_uri(uri))
    location = f"{root}/{name}" if root else None
    try:  # the kind opens it in mlflow ui's model-training view (MLflow 3), not the GenAI one
        return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


def start_run(uri: str, experiment: str, params: Mapping[str, Any], *,
              run_name: str | None = None, tags: Mapping[str, str] | None = None,
              config: Mapping[str, Any] | None = None) -> str:
    """Create a run with its parameters (and the full config as an artifact); return its id."""
    c = client(uri)
    exp_id = _experiment_id(c, uri, experiment)
    run = c.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
    run_id = run.info.run_id
    plist = [Param(k, _param_value(v)) for k, v in params.items()]
    for i in range(0, len(plist), _BATCH):
        c.log_batch(run_id, params=plist[i:i + _BATCH])
    if config is not None:
        c.log_dict(run_id, dict(config), "config.json")
    return run_id


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= _MAX_PARAM else s[: _MAX_PARAM - 3] + "..."


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics (non-finite values are skipped: MLflow cannot plot them)."""
    c = client(uri)
    ts = int(time.time() * 1000)
    ms = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
          if v is not None and math.isfinite(float(v))]
    for i in range(0, len(ms), _BATCH):
        c.log_batch(run_id, metrics=ms[i:i + _BATCH])


# Runs whose encoder was trained with labels (SupCon, ORCA): their representation is not blind,
# so a "blind" search on it (the CWoLa bump hunt, anomaly scores) is not one; filter on this tag.
SAW_LABELS_TAG = "clrdist.encoder_saw_labels"


def label_tags(saw_labels: bool) -> dict[str, str]:
    """The tag that says whether a run's encoder saw truth labels in training."""
    return {SAW_LABELS_TAG: "true" if saw_labels else "false"}


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_eval(uri: str, run_id: str, results: Mapping[str, Any], step: int | None = None) -> None:
    """Log evaluation results (objects with ``metrics``, ``figures`` and optional ``tables``)."""
    import matplotlib.pyplot as plt

    c = client(uri)
    for name, res in results.items():
        log_metrics(uri, run_id, res.metrics, step=step)
        for fname, fig in (getattr(res, "figures", None) or {}).items():
            c.log_figure(run_id, fig, f"eval/{name}/{fname}")
            plt.close(fig)
        for tname, rows in (getattr(res, "tables", None) or {}).items():
            c.log_dict(run_id, {"rows": rows}, f"eval/{name}/{tname}.json")


# Tags a run carries while it is not FINISHED: why it ended and in which stage.
FAILURE_TAGS = ("clrdist.failure_reason", "clrdist.failure_stage")


def end_run(uri: str, run_id: str, status: str = "FINISHED", *, reason: str | None = None,
            stage: str | None = None) -> None:
    """Close a run: FINISHED, or FAILED / KILLED with ``clrdist.failure_reason`` (and the stage:
    preflight, ray_start, training, evaluation, ...) as tags."""
    c = client(uri)
    if reason is not None or stage is not None:
        tags = {FAILURE_TAGS[0]: (reason or "")[:_MAX_PARAM], FAILURE_TAGS[1]: stage or ""}
        c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    c.set_terminated(run_id, status)


def find_run(uri: str, experiment: str, run_name: str) -> dict[str, Any] | None:
    """The newest run called ``run_name`` in ``experiment`` (as :func:`get_run`, plus ``run_id``)."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    quote = "'" if "'" not in run_name else '"'
    if quote in run_name:
        raise TrackingError(f"tracking.run_name {run_name!r}: use either ' or \" in a run name, not both")
    runs = c.search_runs([exp.experiment_id], f"attributes.run_name = {quote}{run_name}{quote}",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return {"run_id": runs[0].info.run_id, **get_run(uri, runs[0].info.run_id)}


def reopen_run(uri: str, run_id: str, tags: Mapping[str, str] | None = None) -> None:
    """Mark an interrupted run RUNNING again (a resumed training continues it)."""
    c = client(uri)
    for key in FAILURE_TAGS:
        if key in c.get_run(run_id).data.tags:
            c.delete_tag(run_id, key)
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    c.update_run(run_id, status="RUNNING")


def get_run(uri: str, run_id: str) -> dict[str, Any]:
    """Params, tags and latest metrics of a run, as plain dicts."""
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise TrackingError(f"run {run_id!r} not found in {uri}: {e.message}") from None
    return {"params": dict(run.data.params), "tags": dict(run.data.tags),
            "metrics": dict(run.data.metrics), "status": run.info.status,
            "artifact_uri": run.info.artifact_uri}


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]


def download_config(uri: str, run_id: str) -> dict[str, Any]:
    """The resolved run config stored at start_run."""
    return _load_json_artifact(uri, run_id, "config.json")


def _load_json_artifact(uri: str, run_id: str, name: str) -> dict[str, Any]:
    import tempfile

    c = client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, name, tmp)
        return json.loads(Path(local).read_text())


def child_runs(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """Runs nested under ``parent_run_id`` (tag mlflow.parentRunId), oldest first, as get_run."""
    c = client(uri)
    parent = c.get_run(parent_run_id)
    runs = c.search_runs([parent.info.experiment_id],
                         f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                         order_by=["attributes.start_time ASC"], max_results=10_000)
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name, "params": dict(r.data.params),
             "tags": dict(r.data.tags), "metrics": dict(r.data.metrics), "status": r.info.status}
            for r in runs]


def log_artifact_file(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """A local file (a plot, a table) as an artifact of the run, under ``artifact_path``."""
    client(uri).log_artifact(run_id, str(path), artifact_path)


def log_json(uri: str, run_id: str, obj: Mapping[str, Any], path: str) -> None:
    """A JSON artifact (e.g. a sweep's best config) at ``path`` in the run's artifacts."""
    client(uri).log_dict(run_id, dict(obj), path)
