"""Driver side of training: check the config (:mod:`clrdist.train.preflight`), open the run and
hold it (:mod:`clrdist.train.lifecycle`), and run Ray Train's TorchTrainer (here). Evaluation is
not here: ``clrdist.pipeline`` trains through :func:`training_run` and :func:`fit`, then
evaluates the checkpoint in the same run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from clrdist import tracking
from clrdist.config import RunConfig
from clrdist.train.lifecycle import TrainingFailed, TrainingRun, training_run  # noqa: F401
from clrdist.train.preflight import check_components, check_train_sample, preflight  # noqa: F401
from clrdist.train.resume import find_resumable, open_run, ray_run_name, resolve_paths  # noqa: F401
from clrdist.train.signals import Preempted, RunInterrupted  # noqa: F401


@dataclass
class TrainResult:
    run_id: str
    checkpoint_path: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False  # continued an interrupted MLflow run (and its checkpoints)


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


def torch_config(cfg: RunConfig):
    """The process group: NCCL on GPUs, gloo on CPUs, and a timeout on every collective
    (``scaling.collective_timeout_s``): a rank that never arrives fails the run, it does not hang."""
    # lazy: Ray Train (~0.7 s) only when training starts; `clrdist eval` imports this module without it
    from ray.train.torch import TorchConfig

    return TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo",
                       timeout_s=cfg.scaling.collective_timeout_s)


# Ray Train's controller takes one worker report per poll (each worker's report queue holds one)
# and polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default: a worker that reports (a
# checkpoint, an epoch's metrics) more often than that waits for the controller, and the run ends
# up to 2 s per queued report after its last step. Polling every 0.25 s keeps short epochs and
# frequent checkpoints from idling the workers (`python -m bench.train_overhead`); a value the
# user exports wins.
CONTROLLER_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
CONTROLLER_POLL_S = 0.25


@contextlib.contextmanager
def controller_poll_interval(seconds: float = CONTROLLER_POLL_S) -> Iterator[None]:
    """Set Ray Train's controller poll interval while a trainer starts (Ray Train hands the
    driver's value to its controller), unless the user set one; restored afterwards."""
    if CONTROLLER_POLL_ENV in os.environ:
        yield
        return
    os.environ[CONTROLLER_POLL_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop(CONTROLLER_POLL_ENV, None)


def _torch_trainer_fit(cfg: RunConfig, run_id: str, callbacks: list | None,
                       stop_file: str | None = None):
    # lazy: Ray Train (~0.7 s) only when training starts; `clrdist eval` imports this module without it
    import ray.train
    from ray.train.torch import TorchTrainer

    # lazy: the workers' loop imports Ray Train (~0.8 s), only when training starts
    from clrdist.train.loop import train_loop_per_worker

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_config": cfg.to_dict(), "tracking_uri": cfg.tracking.uri,
                           "mlflow_run_id": run_id, "stop_file": stop_file},
        torch_config=torch_config(cfg),
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
    with controller_poll_interval():
        return trainer.fit()
