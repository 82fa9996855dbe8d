"""Which MLflow run a training writes into: a new one, or the killed one it continues (the same
command with the same ``tracking.run_name``, or ``--resume RUN_ID``), and the claim on a run name
that keeps two trainings of one name from running at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path

from clrdist import tracking
from clrdist.config import ConfigError, RunConfig, drop_foreign, flatten
from clrdist.procs import process_start_time


def resolve_paths(cfg: RunConfig, base: str | Path | None = None) -> RunConfig:
    """A copy with every path absolute (workers do not share the driver's working directory);
    relative paths are taken from ``base`` (default: the working directory)."""
    cfg = cfg.model_copy(deep=True)
    root = Path(base) if base is not None else Path.cwd()
    absolute = lambda p: str((root / p).resolve())  # noqa: E731 (an absolute p stays itself)
    cfg.data.train_store = absolute(cfg.data.train_store)
    for key in ("eval_train_store", "eval_test_store", "val_store"):
        if getattr(cfg.data, key):
            setattr(cfg.data, key, absolute(getattr(cfg.data, key)))
    cfg.checkpoint.storage_path = absolute(cfg.checkpoint.storage_path)
    cfg.tracking.uri = tracking.resolve_uri(cfg.tracking.uri)
    return cfg


def ray_run_name(cfg: RunConfig, run_id: str) -> str:
    """Ray Train's RunConfig(name): fixed by the MLflow run, so a resumed run finds its
    checkpoints (Ray Train restores the checkpoint list of an existing run directory)."""
    return f"{cfg.name}-{run_id[:8]}"


def _driver_tags() -> dict[str, str]:
    pid = os.getpid()
    return {"clrdist.driver_host": socket.gethostname(), "clrdist.driver_pid": str(pid),
            "clrdist.driver_start": str(process_start_time(pid))}


def _driver_alive(tags: dict[str, str]) -> bool | None:
    """Is the driver recorded in a run's tags still running? None: on another host, unknown."""
    if tags.get("clrdist.driver_host") != socket.gethostname():
        return None
    try:
        pid = int(tags.get("clrdist.driver_pid", ""))
    except ValueError:
        return None
    return str(process_start_time(pid)) == tags.get("clrdist.driver_start")


def _config_diff(a: dict, b: dict) -> list[str]:
    fa, fb = dict(flatten(a)), dict(flatten(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def find_resumable(cfg: RunConfig, resume: str | None = None) -> dict | None:
    """The MLflow run this invocation continues, or None for a new run.

    ``resume`` (``clrdist train --resume RUN_ID``) names it; otherwise the newest run called
    ``tracking.run_name`` in ``tracking.experiment`` is continued when it is KILLED, or RUNNING
    with its driver gone (a SIGKILL the watchdog could not report, e.g. a lost node). FINISHED
    and FAILED runs are not continued by name (a failure would most likely repeat): the same
    command then starts a new run; ``--resume`` continues a FAILED one. The config (paths
    resolved) must equal the run's. ``cfg`` must have absolute paths (:func:`resolve_paths`).
    SLURM requeue builds on this: rerun the same command (same run name) and it continues.
    """
    uri = cfg.tracking.uri
    if resume:
        run = {"run_id": resume, **tracking.get_run(uri, resume)}
        if run["status"] == "FINISHED":
            raise ConfigError(f"--resume {resume}: the run is FINISHED; nothing to resume")
        what = f"--resume {resume}"
    elif cfg.tracking.run_name:
        run = tracking.find_run(uri, cfg.tracking.experiment, cfg.tracking.run_name)
        if run is None or run["status"] not in ("RUNNING", "KILLED"):
            return None
        what = f"tracking.run_name {cfg.tracking.run_name!r} (run {run['run_id']})"
    else:
        return None
    if run["status"] == "RUNNING":
        alive, t = _driver_alive(run["tags"]), run["tags"]
        where = f"driver pid {t.get('clrdist.driver_pid')} on {t.get('clrdist.driver_host')}"
        if alive:
            raise ConfigError(f"{what}: the run is still RUNNING ({where}); stop it first")
        if alive is None and not resume:
            raise ConfigError(f"{what}: the run is RUNNING ({where}, not visible from here); if "
                              f"that driver is gone, continue with --resume {run['run_id']}")
    diff = _config_diff(drop_foreign(tracking.download_config(uri, run["run_id"])), cfg.to_dict())
    if diff:
        raise ConfigError(f"{what}: the run was started with a different config (differs in "
                          f"{', '.join(diff[:5])}{', ...' if len(diff) > 5 else ''}); use another "
                          "tracking.run_name for a new run")
    return run


def _saw_labels(cfg: RunConfig) -> bool:
    """Does the run's loss train the encoder on truth labels (SupCon, ORCA)?"""
    # lazy: the losses load torch (~1.5 s); train.lifecycle imports this module without it
    from clrdist.losses import LOSSES

    return bool(getattr(LOSSES.get(cfg.loss.name), "needs_labels", False))


def open_run(cfg: RunConfig, tags: dict[str, str] | None = None,
             resume: str | None = None) -> tuple[str, bool]:
    """(MLflow run id, resumed?): the run :func:`find_resumable` names, reopened, or a new one."""
    uri = cfg.tracking.uri
    run = find_resumable(cfg, resume)
    if run is not None:
        resumes = int(run["tags"].get("clrdist.resumes", "0")) + 1
        tracking.reopen_run(uri, run["run_id"], {**_driver_tags(), "clrdist.resumes": str(resumes),
                                                 "clrdist.resumed_from": run["status"]})
        return run["run_id"], True
    run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.flat(),
                                run_name=cfg.tracking.run_name or f"{cfg.name}-{cfg.loss.name}-seed{cfg.seed}",
                                tags={"clrdist.config_name": cfg.name,
                                      "clrdist.engine": cfg.scaling.engine, **_driver_tags(),
                                      **tracking.label_tags(_saw_labels(cfg)), **(tags or {})},
                                config=cfg.to_dict())
    tracking.set_tags(uri, run_id, {"clrdist.ray_run_dir":
                                    str(Path(cfg.checkpoint.storage_path) / ray_run_name(cfg, run_id))})
    return run_id, False


class RunNameClaim:
    """An exclusive claim on ``tracking.run_name`` in its experiment while this process trains:
    an flock on a file beside the tracking database (sqlite) or in ``checkpoint.storage_path``
    (servers). The kernel drops it when the process ends, however it ends."""

    def __init__(self, cfg: RunConfig):
        self.fd: int | None = None
        name = cfg.tracking.run_name
        if not name:
            return  # MLflow makes a fresh name: nothing to collide with
        uri = cfg.tracking.uri
        root = (Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///")
                else Path(cfg.checkpoint.storage_path))
        key = hashlib.sha256(json.dumps([uri, cfg.tracking.experiment, name]).encode()).hexdigest()
        folder = root / ".clrdist-run-names"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key[:32]}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"tracking.run_name {name!r}: another training of this run name is "
                              f"running now ({holder}); wait for it to end or choose another "
                              "tracking.run_name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the file stays: removing it would race with the next claimer
            self.fd = None
