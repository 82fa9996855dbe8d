"""Downstream evaluations of frozen representations: pure functions on numpy arrays.

Every evaluation returns an ``EvalResult`` (``metrics``: metrics, figures, tables);
``clrdist.tracking`` logs it. No config, no Ray, no MLflow, no argparse here (a trained run's
evaluation from its config is ``clrdist.evaluation``). Submodules: ``registry`` (the
evaluations a run can ask for and their typed options), ``runner`` (``run_evaluations``,
``evaluate_during_training``), ``held_out`` (evaluation stores labelled and provably
disjoint), ``metrics`` (ROC, 1/eps_B, SIC), ``lct`` (linear classifier test), ``baselines``,
``cwola``, ``bumphunt``, ``nplm``, ``anomaly``, ``jetimages`` (jet images, image autoencoder),
``nae`` (normalised autoencoder), ``mimic`` (EFP mimickers), ``openworld`` (ORCA's metrics),
``plots``.

Importing the package imports none of them: the config reads the registry without loading
sklearn or torch.
"""
