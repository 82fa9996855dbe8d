"""Train, then evaluate the checkpoint, then log: what ``clrdist train``, the demo, sweeps and
``ray job submit`` jobs run.

``train_and_evaluate(cfg)`` trains (:mod:`clrdist.train.trainer`), runs the evaluations
``eval.*`` asks for on the final checkpoint (:mod:`clrdist.evaluation`) and logs them into the
same MLflow run, which ends FINISHED only after the evaluation (FAILED at stage ``evaluation``
when it fails). ``evaluate_run(uri, run_id, which)`` evaluates a finished run's checkpoint
again, and logs into that run (``clrdist eval RUN_ID``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clrdist import tracking
from clrdist.config import ConfigError, RunConfig, config_from_dict
from clrdist.train import trainer
from clrdist.train.checkpoint import latest_checkpoint, load_model
from clrdist.train.trainer import TrainResult

log = logging.getLogger(__name__)


def train_and_evaluate(cfg: RunConfig, *, evaluate: bool = True, callbacks: list | None = None,
                       tags: dict[str, str] | None = None, resume: str | None = None,
                       on_trained: Callable[[TrainResult], None] | None = None) -> TrainResult:
    """Train (see :func:`clrdist.train.trainer.train` for ``callbacks``, ``tags``, ``resume``),
    then, unless ``evaluate`` is False, evaluate the final checkpoint and log the results into
    the run; the result's metrics are the last epoch's and the evaluations'. Every check,
    the evaluation stores' included, runs before any cluster starts. ``on_trained(result)`` is
    called between training and evaluation (progress output)."""
    trainer.preflight(cfg, final_evaluation=evaluate)
    cfg = trainer.resolve_paths(cfg)
    with trainer.training_run(cfg, tags, resume) as run:
        result = trainer.fit(cfg, run, callbacks)
        run.stage = "evaluation"
        if on_trained is not None:
            on_trained(result)
        if evaluate:
            result.metrics.update(_evaluate_into_run(cfg, run.run_id, result.checkpoint_path))
    return result


def _evaluate_into_run(cfg: RunConfig, run_id: str, ckpt_path: str) -> dict[str, float]:
    """The post-training evaluations ``eval.*`` asks for, logged into the run."""
    which = set(cfg.eval.requested())
    if which and cfg.data.eval_train_store and cfg.data.eval_test_store:
        results = evaluate_checkpoint(ckpt_path, which, cfg=cfg)
        tracking.log_eval(cfg.tracking.uri, run_id, results)
        return {k: v for res in results.values() for k, v in res.metrics.items()}
    if which:
        log.warning("eval: data.eval_train_store / eval_test_store not set; skipping %s",
                    sorted(which))
    return {}


def evaluate_checkpoint(checkpoint_path: str, which: set[str], *,
                        cfg: RunConfig | None = None) -> dict[str, Any]:
    """Run the evaluations in ``which`` on a checkpoint's model, on the evaluation stores of
    ``cfg`` (default: the checkpoint's own config)."""
    # lazy: the evaluation (scikit-learn, scipy, ~1 s) loads only when a run is evaluated
    from clrdist.evaluation import evaluate_trained

    model, trained_cfg = load_model(checkpoint_path)
    return evaluate_trained(model, trained_cfg, which, cfg=cfg)


def evaluate_run(uri: str, run_id: str, which: set[str], *, latest: bool = False) -> dict[str, Any]:
    """Evaluate the checkpoint recorded in an MLflow run and log the results into that run;
    ``latest``: the newest checkpoint in the run's directory (an unfinished run's)."""
    run = tracking.get_run(uri, run_id)
    ckpt = run["tags"].get("clrdist.checkpoint")
    evaluated = None
    if latest and run["status"] == "FINISHED":
        # its metrics are the final checkpoint's: an older one must not overwrite them
        if not ckpt or not Path(ckpt, "meta.json").is_file():
            raise ConfigError(f"run {run_id}: FINISHED, and its final checkpoint {ckpt or '(none)'} "
                              "is gone; --latest would overwrite the run's final metrics with an "
                              "older checkpoint's, so nothing was evaluated")
    elif latest or not ckpt:
        ray_dir = run["tags"].get("clrdist.ray_run_dir")
        found = latest_checkpoint(ray_dir) if ray_dir else None  # complete checkpoints only
        if not latest:
            raise ConfigError(f"run {run_id}: no final checkpoint (status {run['status']}); "
                              + (f"`clrdist eval {run_id} --latest` evaluates its latest one "
                                 f"(step {found[1]['step']})" if found else "and none on disk"))
        if found is None:
            raise ConfigError(f"run {run_id}: no complete checkpoint under "
                              f"{ray_dir or '(no clrdist.ray_run_dir tag)'}")
        ckpt = evaluated = str(found[0])
    cfg = config_from_dict(tracking.download_config(uri, run_id), source=f"run {run_id}",
                           stored=True)
    results = evaluate_checkpoint(ckpt, which, cfg=cfg)
    tracking.log_eval(uri, run_id, results)
    if evaluated:  # recorded once its evaluation is logged, not before
        tracking.set_tags(uri, run_id, {"clrdist.evaluated_checkpoint": evaluated})
    return results
