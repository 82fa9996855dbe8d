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

Each trial is a full ``clrdist.pipeline.train_and_evaluate`` run (Ray Train workers, its own
MLflow run tagged with the sweep name, the evaluations after training) driven from a Tune
function trainable; Ray Train's ``TuneReportCallback`` forwards every epoch's metrics to Tune,
so ASHA can stop poor trials early. Every trial's config is validated before Tune starts.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clrdist.cluster import ensure_ray
from clrdist.config import SEED_MAX, ConfigError, load_config, load_yaml
from clrdist.errors import PLAIN_NAME
from clrdist.tune_checks import (  # noqa: F401 (part of the sweep API)
    TRIAL_CPUS,
    check_trials_fit,
    check_where_trials_run,
    in_job_copy,
)


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
        # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
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
    # Tune experiment name (a folder under storage_path), MLflow parent run name, tag clrdist.sweep
    name: str = Field("sweep", pattern=PLAIN_NAME)
    base_config: str | None = None  # run config each trial starts from (None: built-in defaults)
    overrides: list[str] = Field(default_factory=list)  # applied to every trial
    space: dict[str, Space]  # dotted config key -> search space
    metric: str = "val_lct_auc"  # metric reported by the training loop at epoch ends
    mode: Literal["min", "max"] = "max"
    # grid: every grid value crossed, choice/uniform drawn at random (Tune's variant generator);
    # random: every key drawn at random (grid lists as choices); optuna: TPE (grid lists as choices)
    search: Literal["grid", "random", "optuna"] = "grid"
    seed: int = Field(0, ge=0, le=SEED_MAX)  # random draws and the TPE sampler
    num_samples: int = Field(1, gt=0)  # grid: repeats of the grid; random / optuna: trials
    scheduler: Literal["asha", "fifo"] = "asha"  # ASHA stops poor trials early (by epoch)
    grace_period: int = Field(1, gt=0)  # epochs before ASHA may stop a trial
    max_concurrent_trials: int = Field(1, gt=0)  # trials at once (each uses num_workers workers)
    storage_path: str = "runs/tune"  # Tune results (shared file system on a cluster)

    def param_space(self) -> dict[str, Any]:
        # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
        from ray import tune

        space = {}
        for key, s in self.space.items():
            if s.grid is not None and self.search != "grid":
                space[key] = tune.choice(s.grid)
            else:
                space[key] = s.to_tune()
        return space

    def total_trials(self) -> int:
        """Trials the sweep runs when nothing stops it."""
        if self.search != "grid":
            return self.num_samples
        n = self.num_samples
        for s in self.space.values():
            n *= len(s.grid) if s.grid is not None else 1
        return n


def load_sweep(path: str | Path, extra_overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep, including every trial config it can produce."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such sweep file")
    try:
        raw = load_yaml(p.read_text()) or {}
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
        spec.base_config = str(Path(spec.base_config).resolve())  # trials run in other folders
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
    if cfg.eval.every_epochs != 1:
        # Tune wants the metric in every epoch's report (a missing one fails the trial)
        raise ConfigError(f"{path}: metric: {spec.metric!r} is reported only during validation; "
                          "set eval.every_epochs: 1 (and data.val_store) in the base config or "
                          "overrides")


def trial_config(spec: SweepSpec, params: dict[str, Any]):
    overrides = list(spec.overrides) + [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                        for k, v in params.items()]
    overrides = [o.removesuffix("\n...") for o in overrides]
    return load_config(spec.base_config, overrides)


@dataclass
class SweepResult:
    """What a sweep produced: one row per trial, the MLflow parent run, and how it ended."""

    rows: list[dict[str, Any]]
    parent_run_id: str
    tracking_uri: str
    experiment_path: str
    resumed: bool  # continued a stopped sweep with Tuner.restore
    interrupted: bool  # stopped by a signal before every trial ended (rerun to resume)
    best: dict[str, Any] | None = None  # the best row


STATE_FILE = "clrdist_sweep.json"  # in the Tune experiment folder: the MLflow parent run


def run_sweep(spec: SweepSpec, *, resume: bool = True) -> SweepResult:
    """Run the sweep with Ray Tune, nested in MLflow; resume it if it was stopped.

    One MLflow parent run per sweep (the spec, its search space, then the best trial and its
    config); one nested run per trial (tag ``mlflow.parentRunId``) with the trial's params,
    per-epoch metrics and final evaluations. If ``storage_path/name`` holds a stopped sweep (and
    ``resume``), ``Tuner.restore`` continues it: finished trials are kept, not repeated, and the
    same parent run is continued. SIGUSR1 (and SIGTERM, turned into SIGUSR1 here)
    makes Tune save its state and stop; the result then has ``interrupted=True``.
    """
    # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
    from ray import tune

    # lazy: mlflow (~2 s) only once a sweep runs
    from clrdist import tracking

    base = trial_config(spec, {})
    check_where_trials_run(spec, base)  # before Ray: stores, tracking and Tune storage
    # each running trial holds TRIAL_CPUS beside its workers: without room for both, the first
    # trial's workers never start on a machine with exactly num_workers cores
    per_trial = base.scaling.num_workers * base.scaling.cpus_per_worker + TRIAL_CPUS
    ensure_ray(max(base.scaling.num_workers * base.scaling.cpus_per_worker,
                   spec.max_concurrent_trials * per_trial))
    check_trials_fit(base)
    _sigterm_stops_tune()
    uri = tracking.resolve_uri(base.tracking.uri)
    exp_path = Path(spec.storage_path).resolve() / spec.name
    state_file = exp_path / STATE_FILE
    resumed = resume and tune.Tuner.can_restore(str(exp_path))
    parent = None
    if resume and state_file.is_file():
        parent = json.loads(state_file.read_text())["parent_run_id"]
        tracking.reopen_run(uri, parent)
    if parent is None:
        parent = tracking.start_run(
            uri, base.tracking.experiment, _spec_params(spec), run_name=spec.name,
            tags={"clrdist.sweep": spec.name, "clrdist.sweep_role": "parent"},
            config=spec.model_dump(mode="json"))
        exp_path.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri}))
        tmp.replace(state_file)

    trainable = tune.with_resources(_trial_fn(spec, parent, uri), {"CPU": TRIAL_CPUS})
    if resumed:
        tuner = tune.Tuner.restore(str(exp_path), trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            # The trial itself only drives Ray Train; the workers reserve their own resources.
            trainable, param_space=spec.param_space(),
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode,
                                        search_alg=_search_alg(spec),
                                        scheduler=_scheduler(spec, base.optim.epochs),
                                        num_samples=spec.num_samples,
                                        # Optuna's limit is its ConcurrencyLimiter
                                        max_concurrent_trials=(None if spec.search == "optuna"
                                                               else spec.max_concurrent_trials)),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(exp_path.parent)),
        )
    grid = tuner.fit()

    runs = {r["tags"].get("clrdist.trial_id"): r for r in tracking.child_runs(uri, parent)}
    rows = []
    for r in grid:
        row = {"trial_id": r.metrics.get("trial_id") if r.metrics else None,
               # a trial the interruption caught before it started has no config yet
               "params": {k: (r.config or {}).get(k) for k in spec.space},
               "error": str(r.error) if r.error else None}
        row.update({k: v for k, v in (r.metrics or {}).items()
                    if k in ("loss", "epoch", "step") or k.startswith("val_")})
        run = runs.get(row["trial_id"])
        row["run_id"] = run["run_id"] if run else None
        rows.append(row)
    # A trial ASHA stopped, or one cut short by the interruption, ends as KILLED, not RUNNING.
    for run in runs.values():
        if run["status"] == "RUNNING":
            tracking.end_run(uri, run["run_id"], "KILLED")
    # A trial ended when it failed, finished or was stopped by the scheduler (both: done in its
    # last result). Not its status: on a stop signal Tune saves its state, then marks every
    # trial it did not finish TERMINATED, a pending one included (2 of 2 "ended", exit 0, and a
    # preempted SLURM job was not requeued).
    # A trial whose MLflow run is FINISHED trained and evaluated to the end even when the stop
    # signal came before Tune recorded its last result (the trial is then TERMINATED without
    # "done" and is not resumed: counting it as cut short requeued the sweep for ever).
    def finished(r) -> bool:
        run = runs.get((r.metrics or {}).get("trial_id"))
        return run is not None and run["status"] == "FINISHED"

    ended = sum(1 for r in grid
                if r.error is not None or (r.metrics or {}).get("done") or finished(r))
    interrupted = ended < spec.total_trials()
    best = _log_best(spec, uri, parent, rows) if rows else None
    tracking.log_json(uri, parent, {"rows": rows}, "trials.json")
    tracking.log_metrics(uri, parent, {"trials_finished": float(ended),
                                       "trials_failed": float(grid.num_errors)})
    status = "KILLED" if interrupted else ("FAILED" if grid.num_errors else "FINISHED")
    tracking.end_run(uri, parent, status)
    return SweepResult(rows=rows, parent_run_id=parent, tracking_uri=uri,
                       experiment_path=str(exp_path), resumed=resumed, interrupted=interrupted,
                       best=best)


def _sigterm_stops_tune() -> None:
    """SIGTERM (scancel, ``ray job stop``) asks Tune for the graceful stop its SIGUSR1 handler
    makes: state saved, exit 75. Installed after ray.init, whose handler would kill the process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))


def _spec_params(spec: SweepSpec) -> dict[str, Any]:
    params = {f"sweep.{k}": v for k, v in spec.model_dump(mode="json").items()
              if k not in ("space", "overrides")}
    params["sweep.overrides"] = list(spec.overrides)
    params.update({f"space.{k}": s.model_dump(exclude_none=True) for k, s in spec.space.items()})
    return params


def _trial_fn(spec: SweepSpec, parent_run_id: str, uri: str):
    """The Tune function trainable: one clrdist training run, nested under the parent run (in
    the parent's tracking store: a trial's process may not see the driver's environment)."""

    workdir = Path.cwd()  # the sweep's relative paths mean what they mean where it was started

    def trial(params: dict[str, Any]) -> None:
        # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        # lazy: the pipeline (torch, zarr, ~3 s) loads in the trial's process, not in the sweep's driver
        from clrdist.pipeline import train_and_evaluate
        from clrdist.train.trainer import resolve_paths

        trial_id = tune.get_context().get_trial_id()  # stable across Tuner.restore
        cfg = resolve_paths(trial_config(spec, params), base=workdir)  # Tune runs trials elsewhere
        cfg.tracking.uri = uri
        cfg.tracking.run_name = f"{spec.name}-{trial_id}-" + "-".join(
            f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        train_and_evaluate(cfg, callbacks=[TuneReportCallback()],
                           tags={"clrdist.sweep": spec.name, "clrdist.trial_id": trial_id,
                                 "mlflow.parentRunId": parent_run_id})

    return trial


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _search_alg(spec: SweepSpec):
    if spec.search == "optuna":
        # lazy: optuna is optional (the tune extra); Ray Tune (~1 s) only once a sweep runs
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(sampler=TPESampler(seed=spec.seed)),
                                  max_concurrent=spec.max_concurrent_trials)
    # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
    from ray.tune.search import BasicVariantGenerator

    # the limit must be given here: TuneConfig(max_concurrent_trials) does not reach a generator
    # passed in explicitly (measured: all 10 trials of a grid ran at once)
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials)


def _scheduler(spec: SweepSpec, epochs: int):
    # lazy: Ray Tune (~1 s) only once a sweep runs; load_sweep validates without it
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "asha":
        # max_t one past the last epoch: ASHA stops trials at its rungs only; a trial that
        # survives them ends on its own (evaluated, its MLflow run FINISHED), not cut at max_t
        return ASHAScheduler(time_attr="epoch", grace_period=spec.grace_period, max_t=epochs + 1)
    return FIFOScheduler()


def _log_best(spec: SweepSpec, uri: str, parent: str, rows: list[dict[str, Any]]):
    """The best trial's metric, params and full config on the parent run."""
    # lazy: mlflow (~2 s) only once a sweep has run
    from clrdist import tracking

    scored = [r for r in rows if isinstance(r.get(spec.metric), (int, float))
              and math.isfinite(r[spec.metric])]
    if not scored:
        return None
    best = (max if spec.mode == "max" else min)(scored, key=lambda r: r[spec.metric])
    tracking.log_metrics(uri, parent, {f"best_{spec.metric}": best[spec.metric]})
    tracking.set_tags(uri, parent, {"clrdist.best_trial_id": best["trial_id"] or "",
                                    "clrdist.best_run_id": best["run_id"] or "",
                                    **{f"best.{k}": v for k, v in best["params"].items()}})
    tracking.log_json(uri, parent, {"params": best["params"], "metrics": {
        k: v for k, v in best.items() if k not in ("params", "error")},
        "config": trial_config(spec, best["params"]).to_dict()}, "best_config.json")
    return best
