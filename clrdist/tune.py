"""Ray Tune sweeps: temperature, latent dimension, augmentation strength, ... of a run config.

A sweep is a YAML file (see ``tuning/``):

    name: jetclr-temperature
    base_config: configs/demo.yaml        # the run config every trial starts from
    overrides: [eval.every_epochs=1]      # applied to every trial
    space:                                # dotted config key -> search space
      loss.temperature: {grid: [0.05, 0.1, 0.2, 0.5]}
      model.output_dim: {choice: [8, 16, 32]}
      augment.strength: {uniform: [0.5, 1.5]}
    metric: val_lct_auc                   # reported by rank 0 at each epoch end
    mode: max
    num_samples: 1                        # repeats of the grid (x random draws)
    scheduler: asha                       # or fifo
    max_concurrent_trials: 1

Each trial is a full ``clrdist.train.train`` run (Ray Train workers, its own MLflow run tagged
with the sweep name) driven from a Tune function trainable; Ray Train's ``TuneReportCallback``
forwards every epoch's metrics to Tune, so ASHA can stop poor trials early. Every trial's config
is validated before Tune starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clrdist.config import ConfigError, load_config


class Space(BaseModel):
    """Exactly one of: grid (every value), choice (random pick), uniform / loguniform [lo, hi]."""

    model_config = ConfigDict(extra="forbid")
    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Space:
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given})")
        return self

    def to_tune(self):
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        return tune.loguniform(*self.loguniform)

    def examples(self) -> list[Any]:
        """Values to validate the config with before the sweep starts."""
        if self.grid is not None:
            return list(self.grid)
        if self.choice is not None:
            return list(self.choice)
        return list(self.uniform or self.loguniform)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "sweep"  # Tune experiment name and MLflow tag clrdist.sweep
    base_config: str | None = None  # run config each trial starts from (None: built-in defaults)
    overrides: list[str] = Field(default_factory=list)  # applied to every trial
    space: dict[str, Space]  # dotted config key -> search space
    metric: str = "val_lct_auc"  # metric reported by the training loop at epoch ends
    mode: Literal["min", "max"] = "max"
    num_samples: int = Field(1, gt=0)  # Tune num_samples
    scheduler: Literal["asha", "fifo"] = "asha"  # ASHA stops poor trials early (by epoch)
    grace_period: int = Field(1, gt=0)  # epochs before ASHA may stop a trial
    max_concurrent_trials: int = Field(1, gt=0)  # trials at once (each uses num_workers workers)
    storage_path: str = "runs/tune"  # Tune results (shared file system on a cluster)


def load_sweep(path: str | Path, extra_overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep, including every trial config it can produce."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such sweep file")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
        spec = SweepSpec.model_validate(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    except ValidationError as e:
        msgs = [f"{p}: {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError("\n".join(msgs)) from None
    spec.overrides += list(extra_overrides or [])
    if spec.base_config and not Path(spec.base_config).is_absolute():
        # relative to the working directory first (ray job submit --working-dir .), else the file
        if not Path(spec.base_config).is_file():
            spec.base_config = str(p.parent / spec.base_config)
    for key, space in spec.space.items():
        for value in space.examples():
            trial_config(spec, {key: value})  # raises ConfigError naming the key
    check_metric(spec, trial_config(spec, {}), p)
    return spec


# What rank 0 reports to Ray at every epoch end (clrdist.train.loop); val_* only with validation
EPOCH_METRICS = ("loss", "step", "epoch")


def check_metric(spec: SweepSpec, cfg, path: Path) -> None:
    """The sweep's metric must be one the trials report, or Tune would fail after training."""
    if spec.metric in EPOCH_METRICS:
        return
    if not spec.metric.startswith("val_"):
        raise ConfigError(f"{path}: metric: {spec.metric!r} is not reported by training (each "
                          f"epoch reports {', '.join(EPOCH_METRICS)} and, with eval.every_epochs, "
                          "val_lct_auc, val_lct_max_sic, ...)")
    if not cfg.eval.every_epochs:
        raise ConfigError(f"{path}: metric: {spec.metric!r} is reported only during validation; "
                          "set eval.every_epochs (and data.val_store) in the base config or overrides")


def trial_config(spec: SweepSpec, params: dict[str, Any]):
    overrides = list(spec.overrides) + [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                        for k, v in params.items()]
    overrides = [o.removesuffix("\n...") for o in overrides]
    return load_config(spec.base_config, overrides)


def run_sweep(spec: SweepSpec) -> list[dict[str, Any]]:
    """Run the sweep with Ray Tune; return one row per trial (params, final metrics, MLflow run)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from clrdist.train.trainer import ensure_ray, train

    base = trial_config(spec, {})
    ensure_ray(base)

    def trial(params: dict[str, Any]) -> None:
        cfg = trial_config(spec, params)
        cfg.tracking.run_name = f"{spec.name}-" + "-".join(f"{k.split('.')[-1]}={v}"
                                                         for k, v in params.items())
        train(cfg, callbacks=[TuneReportCallback()], tags={"clrdist.sweep": spec.name})

    scheduler = (ASHAScheduler(time_attr="epoch", grace_period=spec.grace_period,
                               max_t=base.optim.epochs)
                 if spec.scheduler == "asha" else FIFOScheduler())
    tuner = tune.Tuner(
        # The trial itself only drives Ray Train; the workers reserve their own resources.
        tune.with_resources(trial, {"CPU": 0.01}),
        param_space={k: s.to_tune() for k, s in spec.space.items()},
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                    num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials),
        run_config=tune.RunConfig(name=spec.name,
                                  storage_path=str(Path(spec.storage_path).resolve())),
    )
    grid = tuner.fit()
    rows = []
    for r in grid:
        row = {"params": {k: r.config.get(k) for k in spec.space},
               "error": str(r.error) if r.error else None}
        row.update({k: v for k, v in (r.metrics or {}).items()
                    if k in ("loss", "epoch", "step") or k.startswith("val_")})
        rows.append(row)
    return rows
