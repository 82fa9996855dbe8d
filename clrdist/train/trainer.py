"""Driver side of training: check the config, open the MLflow run, run Ray Train, evaluate.

Everything that can be checked without a cluster (stores exist and are valid, engine available,
tracking URI usable) is checked before Ray starts, so a bad config costs no cluster resources.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from clrdist import tracking
from clrdist.config import ConfigError, RunConfig
from clrdist.data.store import StoreError, open_store

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    checkpoint_path: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)


def _open(path: str, key: str):
    """open_store, with the config key in the message."""
    try:
        return open_store(path)
    except StoreError as e:
        raise StoreError(f"{key}: {e}") from None


def preflight(cfg: RunConfig) -> None:
    """Reject what would fail on the cluster anyway, before any resource is started."""
    store = _open(cfg.data.train_store, "data.train_store")
    need = cfg.data.batch_size * cfg.scaling.num_workers
    if store.n < need:
        raise ConfigError(
            f"data.train_store: {cfg.data.train_store} has {store.n} samples, fewer than one global "
            f"batch (data.batch_size {cfg.data.batch_size} x scaling.num_workers "
            f"{cfg.scaling.num_workers} = {need})")
    if cfg.data.n_particles > store.n_particles:
        raise ConfigError(f"data.n_particles: {cfg.data.n_particles} exceeds the "
                          f"{store.n_particles} particle slots of {cfg.data.train_store}")
    for key in ("eval_train_store", "eval_test_store", "val_store"):
        path = getattr(cfg.data, key)
        if path is not None:
            _open(path, f"data.{key}")
    check_components(cfg)
    if cfg.scaling.engine == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"scaling.engine: deepspeed is not importable ({e}); "
                              "install clrdist[deepspeed]") from None
    tracking.resolve_uri(cfg.tracking.uri)


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
    if len(cfg.augment.views) != 2:
        raise ConfigError(f"augment.views: contrastive losses take 2 views, got {len(cfg.augment.views)}")
    if getattr(loss, "needs_anomaly_view", False) and not cfg.augment.anomaly_view:
        raise ConfigError(f"augment.anomaly_view: loss {cfg.loss.name!r} needs an anomaly view")
    try:
        build_model(cfg.model)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model: {e}") from None


def ensure_ray(cfg: RunConfig) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local one big enough for the workers."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    need = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    # A laptop may have fewer cores than workers: oversubscribe rather than hang waiting.
    # The dashboard (bound to 127.0.0.1) serves the state API Ray Train's controller polls.
    ray.init(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=True)


def train(cfg: RunConfig, *, evaluate: bool = True, callbacks: list | None = None,
          tags: dict[str, str] | None = None) -> TrainResult:
    """Train with Ray Train's TorchTrainer; log to MLflow; run the post-training evaluations.

    ``callbacks`` go to Ray Train's RunConfig (Tune's ``TuneReportCallback`` in sweeps);
    ``tags`` are added to the MLflow run.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from clrdist.train.loop import train_loop_per_worker

    preflight(cfg)
    # Workers do not share the driver's working directory: make every path absolute.
    cfg = cfg.model_copy(deep=True)
    cfg.data.train_store = str(Path(cfg.data.train_store).resolve())
    for key in ("eval_train_store", "eval_test_store", "val_store"):
        if getattr(cfg.data, key):
            setattr(cfg.data, key, str(Path(getattr(cfg.data, key)).resolve()))
    cfg.checkpoint.storage_path = str(Path(cfg.checkpoint.storage_path).resolve())
    uri = tracking.resolve_uri(cfg.tracking.uri)
    cfg.tracking.uri = uri

    run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.flat(),
                                run_name=cfg.tracking.run_name,
                                tags={"clrdist.config_name": cfg.name,
                                      "clrdist.engine": cfg.scaling.engine, **(tags or {})},
                                config=cfg.to_dict())
    ensure_ray(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_config": cfg.to_dict(), "tracking_uri": uri, "mlflow_run_id": run_id},
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=f"{cfg.name}-{run_id[:8]}", storage_path=cfg.checkpoint.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            callbacks=list(callbacks or []),
            # Ray Train's per-report INFO lines drown the loop's one line per epoch
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    try:
        result = trainer.fit()
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    if result.checkpoint is None:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {run_id}: training finished without a checkpoint")
    ckpt_path = result.checkpoint.path
    tracking.set_tags(uri, run_id, {"clrdist.checkpoint": ckpt_path})
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()
               if isinstance(v, (int, float))}

    if evaluate:
        from clrdist.config import EVALUATIONS
        from clrdist.evaluate import evaluate_checkpoint

        which = {name for name in EVALUATIONS if getattr(cfg.eval, name)}
        if which and cfg.data.eval_train_store and cfg.data.eval_test_store:
            results = evaluate_checkpoint(ckpt_path, which, cfg=cfg)
            tracking.log_eval(uri, run_id, results)
            for res in results.values():
                metrics.update(res.metrics)
        elif which:
            log.warning("eval: data.eval_train_store / eval_test_store not set; skipping %s",
                        sorted(which))
    tracking.end_run(uri, run_id, "FINISHED")
    return TrainResult(run_id=run_id, checkpoint_path=ckpt_path, tracking_uri=uri, metrics=metrics)
