"""Linear classifier test (LCT): how linearly separable are signal and background in a frozen
representation?

Procedure (docs/reference.md): standardise the representation with statistics of the fitting
set, fit a logistic regression on a labelled set, score a *disjoint* labelled test set, and
report AUC, 1/eps_B at eps_S = 0.5, 0.3, 0.2, max SIC with a statistics floor and FPR at TPR
0.5, with bootstrap uncertainties over the test set. Metric names: ``lct_auc``, ``lct_inv_eps_b_at_0.5``,
``lct_inv_eps_b_at_0.3``, ``lct_inv_eps_b_at_0.2``, ``lct_max_sic``, ``lct_fpr_at_tpr_0.5``
(each also with ``_std``), plus ``lct_n_train``, ``lct_n_test``. Figures: ``lct_roc.png``,
``lct_sic.png``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clrdist.eval.metrics import (
    DEFAULT_EPS_B_FLOOR,
    DEFAULT_EPS_S,
    EvalResult,
    Roc,
    binary_labels,
    bootstrap_metrics,
    per_signal_metrics,
    roc_metrics,
)
from clrdist.eval.plots import roc_figure, sic_figure

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs


def fit_linear(rep: np.ndarray, y: np.ndarray, *, C: float = 1.0, seed: int = 0,
               max_iter: int = 5000):
    """Standardise + L2 logistic regression, fitted on rep (n, D) float, y (n,) in {0, 1}."""
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, tol=1e-6, random_state=seed),
    )
    return clf.fit(np.asarray(rep, dtype=np.float64), np.asarray(y))


def linear_scores(rep_train: np.ndarray, y_train: np.ndarray, rep_test: np.ndarray, *,
                  C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Decision-function scores (n_test,) of a linear classifier fitted on the training set."""
    clf = fit_linear(rep_train, y_train, C=C, seed=seed)
    return clf.decision_function(np.asarray(rep_test, dtype=np.float64))


def linear_classifier_test(rep_train: np.ndarray, y_train: np.ndarray, rep_test: np.ndarray,
                           y_test: np.ndarray, *, seed: int = 0, C: float = 1.0,
                           prefix: str = "lct", eps_s: tuple[float, ...] = DEFAULT_EPS_S,
                           eps_b_floor: float = DEFAULT_EPS_B_FLOOR, n_boot: int = 30,
                           figures: bool = True, label_names: dict[int, str] | None = None
                           ) -> EvalResult:
    """LCT on frozen representations.

    rep_train: (n_train, D) float; y_train: (n_train,) store labels (-1 unknown dropped,
    0 background, >= 1 signal); rep_test, y_test likewise on a disjoint set.
    ``n_boot`` test-set bootstrap resamples give ``*_std`` (0 disables them).
    Returns ``EvalResult`` with the metrics listed in the module docstring.
    """
    res, r = _lct(rep_train, y_train, rep_test, y_test, seed=seed, C=C, prefix=prefix,
                  eps_s=eps_s, eps_b_floor=eps_b_floor, n_boot=n_boot, label_names=label_names)
    if figures:
        res.figures.update(roc_sic_figures({"linear": r}, prefix, title="linear classifier test",
                                           eps_b_floor=eps_b_floor))
    return res


def _lct(rep_train, y_train, rep_test, y_test, *, seed, C, prefix, eps_s, eps_b_floor, n_boot,
         label_names) -> tuple[EvalResult, Roc]:
    rep_train, rep_test = np.asarray(rep_train), np.asarray(rep_test)
    keep_tr, ytr = binary_labels(y_train)
    keep_te, yte = binary_labels(y_test)
    if rep_train.ndim != 2 or rep_test.ndim != 2 or rep_train.shape[1] != rep_test.shape[1]:
        raise ValueError(f"representations must be (n, D) with equal D; got {rep_train.shape}, "
                         f"{rep_test.shape}")
    score = linear_scores(rep_train[keep_tr], ytr, rep_test[keep_te], C=C, seed=seed)
    metrics, r = roc_metrics(yte, score, prefix, eps_s=eps_s, eps_b_floor=eps_b_floor)
    if n_boot > 0:
        metrics.update(bootstrap_metrics(yte, score, prefix, n_boot=n_boot, seed=seed,
                                         eps_s=eps_s, eps_b_floor=eps_b_floor))
    # several signal processes (ADC2021): each one against the background too
    metrics.update(per_signal_metrics(np.asarray(y_test)[keep_te], score, prefix,
                                      names=label_names, eps_s=eps_s, eps_b_floor=eps_b_floor))
    metrics[f"{prefix}_n_train"] = float(ytr.size)
    metrics[f"{prefix}_n_test"] = float(yte.size)
    return EvalResult(metrics=metrics), r


def evaluate(inp: Inputs, **options: Any) -> EvalResult:
    """The runner's adapter: the LCT of one representation; its ROC goes into the comparison
    figures ``lct_roc.png`` / ``lct_sic.png`` (trained, untrained, raw, supervised)."""
    kw = {"seed": inp.seed, "C": 1.0, "prefix": "lct", "eps_s": DEFAULT_EPS_S,
          "eps_b_floor": DEFAULT_EPS_B_FLOOR, "n_boot": inp.ctx.n_boot,
          "label_names": inp.ctx.label_names, **options}
    figures = kw.pop("figures", True)
    res, r = _lct(inp.rep_train, inp.y_train, inp.rep_test, inp.y_test, **kw)
    if figures:
        inp.curve("lct", r)
    return res


def roc_sic_figures(curves: dict[str, Roc], prefix: str, title: str = "",
                    eps_b_floor: float = DEFAULT_EPS_B_FLOOR) -> dict:
    return {
        f"{prefix}_roc.png": roc_figure(curves, title),
        f"{prefix}_sic.png": sic_figure(curves, title, eps_b_floor=eps_b_floor),
    }
