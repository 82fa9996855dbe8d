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
import time
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


def resolve_uri(uri: str) -> str:
    """Absolute sqlite URI (creating its folder); other URIs unchanged."""
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


def _experiment_id(c: MlflowClient, uri: str, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(resolve_uri(uri))
    location = f"{root}/{name}" if root else None
    try:
        return c.create_experiment(name, artifact_location=location)
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


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


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
