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
import logging
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from clrdist.errors import first_line
from clrdist.tracking_checks import (  # noqa: F401 (part of this module's API)
    _SCHEMES,
    TrackingError,
    _check_sqlite_file,
    check_store,
    resolve_uri,
)

log = logging.getLogger(__name__)

# MLflow rejects params longer than this; longer values (view lists) are truncated for display
# and the full resolved config is stored as the `config.yaml`-equivalent JSON artifact.
_MAX_PARAM = 6000
_BATCH = 900  # MLflow's log_batch accepts at most 1000 entries


# MLflow's HTTP defaults (7 retries, backoff factor 2, 120 s timeout) turn an unreachable server
# into minutes of silence; a run logs every few steps and can afford to drop nothing but also
# needs no 4-minute stalls. Users' own settings win (setdefault); Ray workers started by a local
# cluster inherit these from the driver.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

def check_uri(uri: str, timeout: float = 5.0, *, create: bool = True) -> str:
    """Resolve ``uri`` and prove the tracking store answers (:func:`check_store`), and that
    MLflow can use a database store; returns the resolved URI."""
    uri = check_store(uri, timeout, create=create)
    if uri.split("://", 1)[0].lower() in ("http", "https"):
        return uri
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as e:  # sqlalchemy, driver and MLflow errors alike: report the first line
        raise TrackingError(f"tracking URI {uri!r}: cannot use the tracking store: "
                            f"{first_line(e)}") from None
    return uri


# A tracking store may be busy for a while (an exclusive sqlite lock held by another process, a
# server restarting): the driver's writes retry with backoff for this long before the error
# counts; metrics are buffered and flushed later instead (log_metrics, flush_metrics).
RETRY_ENV = "CLRDIST_TRACKING_RETRY_S"  # seconds; default 120
# MLflow error codes that no wait cures (an unknown run, a bad value): raised at once
_PERMANENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
              "BAD_REQUEST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED"}


def retry_seconds() -> float:
    return float(os.environ.get(RETRY_ENV, "120"))


def _retry(what: str, uri: str, fn, seconds: float | None = None):
    """``fn()``, retried with exponential backoff (0.25 s doubling to 8 s) for up to ``seconds``
    (default :func:`retry_seconds`); then a one-line TrackingError naming the store and the
    reason. Errors no wait cures (an unknown run, an invalid value) are raised at once."""
    deadline = time.monotonic() + (retry_seconds() if seconds is None else seconds)
    delay, warned = 0.25, False
    while True:
        try:
            return fn()
        except (mlflow.exceptions.MlflowException, sqlite3.Error, OSError, ConnectionError) as e:
            if getattr(e, "error_code", None) in _PERMANENT:
                raise
            err = e
        if time.monotonic() + delay > deadline:
            raise TrackingError(f"tracking store {uri}: cannot {what}: {first_line(err)}") from None
        if not warned:
            log.warning("tracking store %s busy (%s); retrying to %s", uri, first_line(err), what)
            warned = True
        time.sleep(delay)
        delay = min(8.0, delay * 2)


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
    exp_id = _retry("create the experiment", uri, lambda: _experiment_id(c, uri, experiment))
    run = _retry("create the run", uri,
                 lambda: c.create_run(exp_id, run_name=run_name, tags=dict(tags or {})))
    run_id = run.info.run_id
    plist = [Param(k, _param_value(v)) for k, v in params.items()]
    for i in range(0, len(plist), _BATCH):
        _retry("log parameters", uri, lambda i=i: c.log_batch(run_id, params=plist[i:i + _BATCH]))
    if config is not None:
        _retry("store the config", uri, lambda: c.log_dict(run_id, dict(config), "config.json"))
    return run_id


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= _MAX_PARAM else s[: _MAX_PARAM - 3] + "..."


# metrics not yet written, per (uri, run id): a busy store delays them, never drops them
_pending: dict[tuple[str, str], list[Metric]] = {}
_first_failure: dict[tuple[str, str], float] = {}
_next_try: dict[tuple[str, str], float] = {}  # after a failure, the next attempt waits this long
RETRY_INTERVAL = 15.0  # seconds; MLflow's sqlite store itself waits up to 20 s on a lock


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics (non-finite values are skipped: MLflow cannot plot them).

    Never fails on a busy store: the metrics are buffered with their timestamps and written by
    the next call that reaches the store, or by :func:`flush_metrics` (which a training calls at
    its end, and which fails if the store stayed unusable)."""
    ts = int(time.time() * 1000)
    key = (uri, run_id)
    _pending.setdefault(key, []).extend(
        Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
        if v is not None and math.isfinite(float(v)))
    if time.monotonic() < _next_try.get(key, 0.0):
        return  # the store failed a moment ago: do not stall training on it at every step
    try:
        _write_pending(key)
    except Exception as e:  # noqa: BLE001 - any store error: keep the metrics for later
        _next_try[key] = time.monotonic() + RETRY_INTERVAL
        if key not in _first_failure:
            _first_failure[key] = time.monotonic()
            log.warning("tracking store %s unavailable (%s): metrics are buffered and written "
                        "when it answers again", uri, first_line(e))


def _write_pending(key: tuple[str, str]) -> None:
    ms = _pending.get(key) or []
    c = client(key[0])
    while ms:
        c.log_batch(key[1], metrics=ms[:_BATCH])
        del ms[:_BATCH]
    _pending.pop(key, None)
    _next_try.pop(key, None)
    if _first_failure.pop(key, None) is not None:
        log.warning("tracking store %s answers again: buffered metrics written", key[0])


def flush_metrics(uri: str, run_id: str, seconds: float | None = None) -> None:
    """Write the buffered metrics of a run, retrying for up to ``seconds`` (:func:`retry_seconds`); a
    store that stays unusable raises TrackingError with the reason and how many were lost."""
    key = (uri, run_id)
    if not _pending.get(key):
        return
    try:
        _retry("write buffered metrics", uri, lambda: _write_pending(key), seconds)
    except TrackingError as e:
        n = len(_pending.pop(key, []))
        _first_failure.pop(key, None)
        raise TrackingError(f"{e} ({n} metric values of run {run_id} could not be written)") from None


# Runs whose encoder was trained with labels (SupCon, ORCA): their representation is not blind,
# so a "blind" search on it (the CWoLa bump hunt, anomaly scores) is not one; filter on this tag.
SAW_LABELS_TAG = "clrdist.encoder_saw_labels"


def label_tags(saw_labels: bool) -> dict[str, str]:
    """The tag that says whether a run's encoder saw truth labels in training."""
    return {SAW_LABELS_TAG: "true" if saw_labels else "false"}


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    c = client(uri)
    _retry("set tags", uri, lambda: c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))


@dataclass(frozen=True)
class Run:
    """One run of one store, bound: what a training worker writes through (no I/O until used)."""

    uri: str
    run_id: str

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        log_metrics(self.uri, self.run_id, metrics, step=step)

    def flush(self, seconds: float | None = None) -> None:
        flush_metrics(self.uri, self.run_id, seconds)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        set_tags(self.uri, self.run_id, tags)


def log_eval(uri: str, run_id: str, results: Mapping[str, Any], step: int | None = None) -> None:
    """Log evaluation results (objects with ``metrics``, ``figures`` and optional ``tables``)."""
    # lazy: pyplot (~0.4 s) only when figures are logged
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
    if _pending.get((uri, run_id)):
        try:
            flush_metrics(uri, run_id)
        except TrackingError as e:
            if status == "FINISHED":  # the run did not record everything: it did not finish well
                status, reason, stage = "FAILED", str(e), stage or "tracking"
    if reason is not None or stage is not None:
        tags = {FAILURE_TAGS[0]: (reason or "")[:_MAX_PARAM], FAILURE_TAGS[1]: stage or ""}
        _retry("record why the run ended", uri,
               lambda: c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
    _retry(f"close the run {status}", uri, lambda: c.set_terminated(run_id, status))


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

    def reopen() -> None:
        for key in FAILURE_TAGS:
            if key in c.get_run(run_id).data.tags:
                c.delete_tag(run_id, key)
        if tags:
            c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        c.update_run(run_id, status="RUNNING")

    _retry("reopen the run", uri, reopen)


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

