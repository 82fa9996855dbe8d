"""The driver's side of a run's life (:func:`training_run`): the run name claimed, the MLflow run
opened (or a killed one reopened, :mod:`clrdist.train.resume`), Ray started or joined, signals
turned into a KILLED run with a message (:mod:`clrdist.train.signals`), and the run closed in a
true state whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clrdist import runtime, tracking
from clrdist.cluster import ensure_ray
from clrdist.config import RunConfig
from clrdist.errors import ClrdistError, first_line
from clrdist.train import preempt
from clrdist.train.resume import RunNameClaim, open_run, ray_run_name
from clrdist.train.signals import (
    RunInterrupted,
    _signals_received,
    interruption,
    signals_raise,
)

log = logging.getLogger("clrdist.train.trainer")


class TrainingFailed(ClrdistError):
    """Training stopped on a user-visible problem (e.g. a non-finite loss); the run is FAILED."""


def _reason(e: BaseException) -> str:
    """One line for the clrdist.failure_reason tag: the worker's error when a worker failed."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        rank, err = min(failures.items())
        cause = getattr(err, "cause", None) or err  # RayTaskError wraps the worker's exception
        return f"rank {rank}: {type(cause).__name__}: {first_line(cause)}"
    if isinstance(e, (RunInterrupted, KeyboardInterrupt)):
        return f"driver interrupted by {'SIGINT' if isinstance(e, KeyboardInterrupt) else e}"
    if isinstance(e, SystemExit):  # Ray's own SIGTERM handler exits with the signal number
        return ("driver interrupted by SIGTERM" if e.code == signal.SIGTERM
                else f"driver exited ({e.code}) during the run")
    return f"{type(e).__name__}: {first_line(e)}"


def _user_error(e: BaseException) -> ClrdistError | None:
    """The ClrdistError a worker raised (e.g. NonFiniteLoss), found through Ray's wrappers."""
    for err in (getattr(e, "worker_failures", None) or {}).values():
        cause = getattr(err, "cause", None) or err
        if isinstance(cause, ClrdistError):
            return cause
    return None


@dataclass
class TrainingRun:
    """The MLflow run a training writes into, while :func:`training_run` holds it open."""

    run_id: str
    tracking_uri: str
    resumed: bool  # continued an interrupted MLflow run (and its checkpoints)
    stop_file: str | None = None  # SIGUSR1's stop request for the workers (clrdist.train.preempt)
    stage: str = "ray_start"  # clrdist.failure_stage if it fails now: ray_start, training, ...


@contextlib.contextmanager
def training_run(cfg: RunConfig, tags: dict[str, str] | None = None,
                 resume: str | None = None) -> Iterator[TrainingRun]:
    """Open the MLflow run (or reopen the one :func:`find_resumable` names), start or join Ray,
    and hold the run while the body trains (:func:`fit`) and whatever follows in the same run
    (the pipeline's evaluation, after it sets ``stage``). ``cfg`` must have absolute paths
    (:func:`resolve_paths`).

    The run always ends in a true state: FINISHED when the body returns; FAILED with
    ``clrdist.failure_reason`` and ``clrdist.failure_stage`` (the ``stage`` it failed in) on any
    error; KILLED on SIGINT / SIGTERM / SIGHUP (raised as :class:`RunInterrupted`), on SIGUSR1's
    preemption (:class:`Preempted`) and, through the watchdog, on SIGKILL.
    """
    uri = cfg.tracking.uri
    claim = RunNameClaim(cfg)  # a second training of the same run name stops here
    try:
        run_id, resumed = open_run(cfg, tags, resume)
    except BaseException:
        claim.release()
        raise
    runtime.watch_run(uri, run_id)
    run = TrainingRun(run_id=run_id, tracking_uri=uri, resumed=resumed)
    _signals_received.clear()
    try:
        run.stop_file = preempt.request_path(Path(cfg.checkpoint.storage_path)
                                             / ray_run_name(cfg, run_id))
        preempt.clear(run.stop_file)  # a resumed run must not stop on its predecessor's request
        # ray.init sets its own SIGTERM handler (sys.exit): ours go on after it
        ensure_ray(cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)
        run.stage = "training"
        with signals_raise(run.stop_file):
            yield run
    except BaseException as raised:
        claim.release()
        # A signal handler that fires inside Ray's C code surfaces as a SystemError (or other)
        # with our RunInterrupted / KeyboardInterrupt as its context, and Ray's own SIGTERM
        # handler (set while ray.init runs) as SystemExit(15): the signal is what happened.
        e = interruption(raised) or raised
        if isinstance(e, RunInterrupted):
            e.run_id = run_id  # the CLI's message names the KILLED run
        killed = isinstance(e, (RunInterrupted, KeyboardInterrupt, SystemExit))
        try:
            tracking.end_run(uri, run_id, "KILLED" if killed else "FAILED", reason=_reason(e),
                             stage=run.stage)
            runtime.release_run(run_id)
        except Exception as te:  # the store failed too: the watchdog marks it when we exit
            log.error("could not close MLflow run %s: %s", run_id, first_line(te))
        if (user := _user_error(e)) is not None:
            raise TrainingFailed(f"run {run_id}: {user}") from None
        if run.stage == "ray_start" and isinstance(e, Exception):
            log.debug("Ray did not start", exc_info=True)
            raise TrainingFailed(f"run {run_id}: Ray did not start: {_reason(e)} (the run is "
                                 "FAILED; -v shows the traceback)") from None
        if e is not raised:
            raise e from None
        raise
    claim.release()
    tracking.end_run(uri, run_id, "FINISHED")
    runtime.release_run(run_id)
