"""Downstream evaluations of frozen representations: pure functions on numpy arrays.

Every evaluation returns an :class:`EvalResult` (metrics, figures, tables); ``clrdist.tracking``
logs it. No Ray, no MLflow, no argparse here. Submodules: ``metrics`` (ROC, 1/eps_B, SIC),
``lct`` (linear classifier test), ``baselines``, ``cwola``, ``bumphunt``, ``nplm``, ``anomaly``,
``jetimages`` (jet images, image autoencoder), ``nae`` (normalised autoencoder), ``mimic``
(EFP mimickers), ``openworld`` (ORCA's metrics), ``plots``, ``runner`` (``run_evaluations``, ``evaluate_during_training``).
"""

from clrdist.eval.metrics import EvalResult

__all__ = ["EvalResult"]
