"""Driver side of training: check the config, open (or reopen) the MLflow run, run Ray Train,
close the run in a true state. Evaluation is not here: ``clrdist.pipeline`` trains through
:func:`training_run` and :func:`fit`, then evaluates the checkpoint in the same run.

Everything that can be checked without a cluster (stores valid and sane, evaluation stores
labelled and held out, engine available, tracking store and RAY_ADDRESS answering) is checked
before Ray starts, so a bad config costs no cluster resources. Rerunning the same command with
the same ``tracking.run_name`` after the driver was killed continues that run from its last
checkpoint (:func:`find_resumable`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clrdist import runtime, tracking
from clrdist.cluster import ClusterError, check_ray_address, ensure_ray
from clrdist.config import ConfigError, RunConfig
from clrdist.data.store import StoreError, open_store
from clrdist.errors import ClrdistError
from clrdist.eval.held_out import check_evaluation_stores
from clrdist.train import preempt

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    checkpoint_path: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False  # continued an interrupted MLflow run (and its checkpoints)


def _open(path: str, key: str):
    """open_store, with the config key in the message."""
    try:
        return open_store(path)
    except StoreError as e:
        raise StoreError(f"{key}: {e}") from None


def preflight(cfg: RunConfig, *, final_evaluation: bool = False) -> None:
    """Reject what would fail on the cluster anyway, before any resource is started: the stores
    (a sample of the training store's shards re-checksummed and its samples sanity-checked), the
    evaluation stores (labelled, both classes, held out: the validation pair, and with
    ``final_evaluation`` the pair the evaluations after training read), the components, the
    engine, the tracking store (answering within seconds) and RAY_ADDRESS (reachable)."""
    store = _open(cfg.data.train_store, "data.train_store")
    need = cfg.data.batch_size * cfg.scaling.num_workers
    if store.n < need:
        raise ConfigError(
            f"data.train_store: {cfg.data.train_store} has {store.n} samples, fewer than one global "
            f"batch (data.batch_size {cfg.data.batch_size} x scaling.num_workers "
            f"{cfg.scaling.num_workers} = {need})")
    for key, want in (("data.n_particles", cfg.data.n_particles), ("augment.slots", cfg.augment.slots)):
        if want is not None and want > store.n_particles:
            raise ConfigError(f"{key}: {want} exceeds the {store.n_particles} particle slots of "
                              f"{cfg.data.train_store}")
    check_train_sample(store)
    d = cfg.data
    for key in ("eval_train_store", "eval_test_store", "val_store"):
        path = getattr(d, key)
        if path is not None:
            _open(path, f"data.{key}")
    final = final_evaluation and cfg.eval.requested() and d.eval_train_store and d.eval_test_store
    check_evaluation_stores(cfg, final=bool(final))
    check_components(cfg)
    if cfg.scaling.engine == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"scaling.engine: deepspeed is not importable ({e}); "
                              "install clrdist[deepspeed]") from None
    tracking.check_uri(cfg.tracking.uri)
    try:
        check_ray_address()
    except ClusterError as e:
        raise ConfigError(str(e)) from None


# Pre-training check of the training store: this many random shard files re-checksummed and
# this many random samples through the sanity checks (finite, pT >= 0, masks, labels); random
# samples touch up to as many chunks, so a large store costs a few seconds here.
PREFLIGHT_SHARDS = 4
PREFLIGHT_SAMPLES = 1024


def check_train_sample(store) -> None:
    """A sample of the training store: shard checksums and physical sanity (clrdist.data.store)."""
    from clrdist.data.store import check_sample_sanity, verify_store

    try:
        verify_store(store, sample=PREFLIGHT_SHARDS)
        check_sample_sanity(store, n=PREFLIGHT_SAMPLES)
    except StoreError as e:
        raise StoreError(f"data.train_store: {e}") from None


def check_components(cfg: RunConfig) -> None:
    """Every registered name resolves and the views fit the loss (cheap: builds on CPU)."""
    from clrdist.losses import build_loss
    from clrdist.models import build_model
    from clrdist.physics.augment import build_view

    try:
        loss = build_loss(cfg.loss)
    except KeyError as e:
        raise ConfigError(f"loss.name: {e.args[0]}") from None
    for i, view in enumerate(cfg.augment.views):
        try:
            build_view(view, cfg.augment.strength, cfg.augment.backend)
        except KeyError as e:
            raise ConfigError(f"augment.views.{i}: {e.args[0]}") from None
        except TypeError as e:
            raise ConfigError(f"augment.views.{i}: {e}") from None
    if cfg.augment.anomaly_view:
        try:
            build_view(cfg.augment.anomaly_view, cfg.augment.strength, cfg.augment.backend)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"augment.anomaly_view: {e.args[0] if isinstance(e, KeyError) else e}") from None
    if cfg.augment.backend == "kernel":
        from clrdist.physics import kernel

        try:
            kernel.require()
        except kernel.KernelUnavailable as e:
            raise ConfigError(f"augment.backend: {e}") from None
    for i, view in enumerate(cfg.augment.local_views):
        try:
            build_view(view, cfg.augment.strength, cfg.augment.backend)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"augment.local_views.{i}: {e.args[0] if isinstance(e, KeyError) else e}") from None
    if cfg.augment.local_views and not getattr(loss, "multi_view", False):
        raise ConfigError(f"augment.local_views: loss {cfg.loss.name!r} takes no local views (dino does)")
    if getattr(loss, "n_known", None) is not None and cfg.model.output_dim <= loss.n_known:
        raise ConfigError(f"model.output_dim: {cfg.model.output_dim} heads leave no novel class "
                          f"for the {loss.n_known} loss.known_classes")
    if len(cfg.augment.views) != 2:
        raise ConfigError(f"augment.views: contrastive losses take 2 views, got {len(cfg.augment.views)}")
    if getattr(loss, "needs_anomaly_view", False) and not cfg.augment.anomaly_view:
        raise ConfigError(f"augment.anomaly_view: loss {cfg.loss.name!r} needs an anomaly view")
    try:
        build_model(cfg.model)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model: {e}") from None


class RunInterrupted(BaseException):
    """SIGTERM / SIGHUP reached the driver (a scheduler's stop or preemption, a closed terminal).
    A BaseException, like KeyboardInterrupt, so that nothing swallows it on the way out."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class TrainingFailed(ClrdistError):
    """Training stopped on a user-visible problem (e.g. a non-finite loss); the run is FAILED."""


class Preempted(RunInterrupted):
    """SIGUSR1 (SLURM's warning signal, forwarded by slurm/ray_cluster.sh) made the workers write
    a checkpoint and stop (clrdist.train.preempt); the run is KILLED and resumes when rerun."""

    exit_code = preempt.EXIT_PREEMPTED

    def __init__(self, step: int):
        super().__init__(signal.SIGUSR1)
        self.args = (f"SIGUSR1 (preempted: checkpoint at step {step})",)


_signals_received: list[int] = []  # SIGTERM / SIGHUP seen by _signals_raise's handler


@contextlib.contextmanager
def _signals_raise(stop_file: str | None = None):
    """SIGTERM and SIGHUP raise RunInterrupted in the main thread while training (SIGINT already
    raises KeyboardInterrupt); SIGUSR1 files a stop request (``stop_file``) that makes the workers
    checkpoint and stop (clrdist.train.preempt). Elsewhere (a Tune trial's thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # Ray's blocking calls (ray.get in fit) turn only KeyboardInterrupt / SystemExit raised
        # by a handler into an interruption; anything else is lost there. train() turns it back.
        _signals_received.append(signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def request_stop(signum, frame):
        preempt.request(stop_file, "SIGUSR1")
        log.warning("SIGUSR1: asking the workers to checkpoint and stop at their next logging step")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    if stop_file:
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, request_stop)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


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
            "clrdist.driver_start": str(runtime.process_start_time(pid))}


def _driver_alive(tags: dict[str, str]) -> bool | None:
    """Is the driver recorded in a run's tags still running? None: on another host, unknown."""
    if tags.get("clrdist.driver_host") != socket.gethostname():
        return None
    try:
        pid = int(tags.get("clrdist.driver_pid", ""))
    except ValueError:
        return None
    return str(runtime.process_start_time(pid)) == tags.get("clrdist.driver_start")


def _config_diff(a: dict, b: dict) -> list[str]:
    from clrdist.config import flatten

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
    diff = _config_diff(tracking.download_config(uri, run["run_id"]), cfg.to_dict())
    if diff:
        raise ConfigError(f"{what}: the run was started with a different config (differs in "
                          f"{', '.join(diff[:5])}{', ...' if len(diff) > 5 else ''}); use another "
                          "tracking.run_name for a new run")
    return run


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
                                      **(tags or {})},
                                config=cfg.to_dict())
    tracking.set_tags(uri, run_id, {"clrdist.ray_run_dir":
                                    str(Path(cfg.checkpoint.storage_path) / ray_run_name(cfg, run_id))})
    return run_id, False


def _reason(e: BaseException) -> str:
    """One line for the clrdist.failure_reason tag: the worker's error when a worker failed."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        rank, err = min(failures.items())
        cause = getattr(err, "cause", None) or err  # RayTaskError wraps the worker's exception
        return f"rank {rank}: {type(cause).__name__}: {_first_line(cause)}"
    if isinstance(e, (RunInterrupted, KeyboardInterrupt)):
        return f"driver interrupted by {'SIGINT' if isinstance(e, KeyboardInterrupt) else e}"
    if isinstance(e, SystemExit):  # Ray's own SIGTERM handler exits with the signal number
        return ("driver interrupted by SIGTERM" if e.code == signal.SIGTERM
                else f"driver exited ({e.code}) during the run")
    return f"{type(e).__name__}: {_first_line(e)}"


def _interruption(e: BaseException) -> BaseException | None:
    """The RunInterrupted / KeyboardInterrupt in ``e``'s chain of causes and contexts, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (RunInterrupted, KeyboardInterrupt)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


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
    run_id, resumed = open_run(cfg, tags, resume)
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
        with _signals_raise(run.stop_file):
            yield run
    except BaseException as raised:
        # A signal handler that fires inside Ray's C code surfaces as a SystemError (or other)
        # with our RunInterrupted / KeyboardInterrupt as its context: the signal is what happened.
        e = _interruption(raised) or raised
        if isinstance(e, KeyboardInterrupt) and _signals_received:
            e = RunInterrupted(_signals_received[-1])
        killed = isinstance(e, (RunInterrupted, KeyboardInterrupt, SystemExit))
        try:
            tracking.end_run(uri, run_id, "KILLED" if killed else "FAILED", reason=_reason(e),
                             stage=run.stage)
            runtime.release_run(run_id)
        except Exception as te:  # the store failed too: the watchdog marks it when we exit
            log.error("could not close MLflow run %s: %s", run_id, _first_line(te))
        if (user := _user_error(e)) is not None:
            raise TrainingFailed(f"run {run_id}: {user}") from None
        if run.stage == "ray_start" and isinstance(e, Exception):
            log.debug("Ray did not start", exc_info=True)
            raise TrainingFailed(f"run {run_id}: Ray did not start: {_reason(e)} (the run is "
                                 "FAILED; -v shows the traceback)") from None
        if e is not raised:
            raise e from None
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    runtime.release_run(run_id)


def fit(cfg: RunConfig, run: TrainingRun, callbacks: list | None = None) -> TrainResult:
    """Ray Train's TorchTrainer on ``run`` (inside :func:`training_run`): the final checkpoint
    recorded in the run (tag ``clrdist.checkpoint``) and the last epoch's metrics."""
    result = _torch_trainer_fit(cfg, run.run_id, callbacks, run.stop_file)
    if (result.metrics or {}).get("preempted"):
        raise Preempted(int(result.metrics["step"]))
    if result.checkpoint is None:
        raise RuntimeError(f"run {run.run_id}: training finished without a checkpoint")
    ckpt_path = result.checkpoint.path
    tracking.set_tags(run.tracking_uri, run.run_id, {"clrdist.checkpoint": ckpt_path})
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()
               if isinstance(v, (int, float))}
    return TrainResult(run_id=run.run_id, checkpoint_path=ckpt_path,
                       tracking_uri=run.tracking_uri, metrics=metrics, resumed=run.resumed)


def train(cfg: RunConfig, *, callbacks: list | None = None, tags: dict[str, str] | None = None,
          resume: str | None = None) -> TrainResult:
    """Train with Ray Train's TorchTrainer, logging to MLflow; no evaluation after training
    (``clrdist.pipeline.train_and_evaluate`` adds it).

    ``callbacks`` go to Ray Train's RunConfig (Tune's ``TuneReportCallback`` in sweeps);
    ``tags`` are added to the MLflow run; ``resume`` continues that MLflow run (otherwise a
    KILLED run of the same ``tracking.run_name`` is continued, see :func:`find_resumable`).
    The run ends FINISHED, FAILED or KILLED (:func:`training_run`).
    """
    preflight(cfg)
    cfg = resolve_paths(cfg)
    with training_run(cfg, tags, resume) as run:
        return fit(cfg, run, callbacks)


def _torch_trainer_fit(cfg: RunConfig, run_id: str, callbacks: list | None,
                       stop_file: str | None = None):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from clrdist.train.loop import train_loop_per_worker

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_config": cfg.to_dict(), "tracking_uri": cfg.tracking.uri,
                           "mlflow_run_id": run_id, "stop_file": stop_file},
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=ray_run_name(cfg, run_id), storage_path=cfg.checkpoint.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            callbacks=list(callbacks or []),
            # Ray Train's per-report INFO lines drown the loop's one line per epoch
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    return trainer.fit()
