"""Run the selected evaluations on store samples through an encoder.

``run_evaluations(encode, train_data=..., test_data=..., which={"lct", ...})`` is what
``clrdist eval`` and the post-training hook call; ``evaluate_during_training`` is the few-second
LCT used as step metrics every N epochs. Inputs are the dicts of ``SampleStore.read_all()``:
``particles (n, P, F) float32 pT in GeV``, ``mask (n, P) bool``, ``label (n,) int8``,
``features (n, K) float32``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from clrdist.eval.metrics import EvalResult, binary_labels, roc_metrics

Batch = Mapping[str, np.ndarray]
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]

KNOWN = ("lct", "baselines", "cwola", "nplm", "anomaly")


def encode_all(encode: Encoder, data: Batch, *, batch_size: int = 1024) -> np.ndarray:
    """Representations (n, D) float32 of every sample in ``data``, computed in batches."""
    n = len(data["label"])
    out = []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        out.append(np.asarray(encode(batch), dtype=np.float32))
    if not out:
        raise ValueError("no samples to encode")
    rep = np.concatenate(out)
    if rep.ndim != 2 or rep.shape[0] != n:
        raise ValueError(f"encode must return (n, D); got {rep.shape} for n={n}")
    return rep


def run_evaluations(encode: Encoder, *, train_data: Batch, test_data: Batch,
                    which: set[str], options: Mapping[str, Any] | None = None,
                    ) -> dict[str, EvalResult]:
    """Encode both sets and run the evaluations named in ``which`` (subset of ``KNOWN``).

    ``train_data`` fits classifiers (LCT, baselines, CWoLa); ``test_data`` (disjoint) scores them.
    options: ``seed`` (0), ``batch_size`` (1024), ``n_boot`` (30), ``feature_names`` (store
    feature names, for baselines), ``model_factory`` (supervised baseline), and per-evaluation
    dicts ``cwola``, ``nplm``, ``anomaly``, ``baselines`` passed as keyword arguments.
    Returns ``{evaluation name: EvalResult}``.
    """
    opts = dict(options or {})
    unknown = set(which) - set(KNOWN)
    if unknown:
        raise KeyError(f"unknown evaluation(s) {sorted(unknown)}; known: {list(KNOWN)}")
    seed = int(opts.get("seed", 0))
    bs = int(opts.get("batch_size", 1024))
    rep_tr = encode_all(encode, train_data, batch_size=bs)
    rep_te = encode_all(encode, test_data, batch_size=bs)
    y_tr, y_te = np.asarray(train_data["label"]), np.asarray(test_data["label"])
    results: dict[str, EvalResult] = {}

    if "lct" in which:
        from clrdist.eval.lct import linear_classifier_test

        results["lct"] = linear_classifier_test(rep_tr, y_tr, rep_te, y_te, seed=seed,
                                                n_boot=int(opts.get("n_boot", 30)))
    if "baselines" in which:
        from clrdist.eval.baselines import run_baselines

        results["baselines"] = run_baselines(
            train_data, test_data, seed=seed, feature_names=opts.get("feature_names"),
            model_factory=opts.get("model_factory"), rep_train=rep_tr, rep_test=rep_te,
            **dict(opts.get("baselines", {})))
    if "cwola" in which:
        from clrdist.eval.cwola import idealised_cwola_scan

        results["cwola"] = idealised_cwola_scan(
            np.concatenate([rep_tr, rep_te]), np.concatenate([y_tr, y_te]), seed=seed,
            **dict(opts.get("cwola", {})))
    if "nplm" in which:
        from clrdist.eval.nplm import nplm_evaluation

        results["nplm"] = nplm_evaluation(
            np.concatenate([rep_tr, rep_te]), np.concatenate([y_tr, y_te]), seed=seed,
            **dict(opts.get("nplm", {})))
    if "anomaly" in which:
        from clrdist.eval.anomaly import anomaly_scores

        results["anomaly"] = anomaly_scores(rep_tr, y_tr, rep_te, y_te, seed=seed,
                                            **dict(opts.get("anomaly", {})))
    return results


def evaluate_during_training(rep_train: np.ndarray, y_train: np.ndarray, rep_val: np.ndarray,
                             y_val: np.ndarray, *, seed: int = 0,
                             max_samples: int = 20000) -> dict[str, float]:
    """Quick LCT for step metrics: ``lct_auc``, ``lct_max_sic``, ``lct_fpr_at_tpr_0.5``
    (plus ``lct_inv_eps_b_at_0.5``). No bootstrap, no figures; at most ``max_samples`` of each
    set (first ones) so it stays within a few seconds."""
    from clrdist.eval.lct import linear_scores

    keep_tr, ytr = binary_labels(np.asarray(y_train)[:max_samples])
    keep_va, yva = binary_labels(np.asarray(y_val)[:max_samples])
    score = linear_scores(np.asarray(rep_train)[:max_samples][keep_tr], ytr,
                          np.asarray(rep_val)[:max_samples][keep_va], seed=seed)
    m, _ = roc_metrics(yva, score, "lct", eps_s=(0.5,))
    return {k: m[k] for k in ("lct_auc", "lct_max_sic", "lct_fpr_at_tpr_0.5",
                              "lct_inv_eps_b_at_0.5")}
