"""Idealised CWoLa (classification without labels) scan of JetCLR-AD (arXiv:2205.10380).

A classifier is trained to separate a *mixed* sample (background plus a signal fraction f) from a
*pure background* sample, with no per-sample labels, and is then scored on labelled signal vs
background. The two training backgrounds and the test background are disjoint (the published
f = 0 AUC of 0.56 came from overlapping samples; here f = 0 gives AUC ~ 0.5).

Metric names, for classifier ``c`` in {``linear``, ``mlp``} and fraction tag ``F`` (``0.001``):
``cwola_c_auc_f_F``, ``cwola_c_max_sic_f_F``, ``cwola_c_inv_eps_b_at_0.5_f_F``; table
``cwola_scan`` (one row per f and classifier with sample counts); figures ``cwola_auc_vs_f.png``,
``cwola_sic_vs_f.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clrdist.eval.lct import linear_scores
from clrdist.eval.metrics import EvalResult, binary_labels, eps_tag, roc_metrics
from clrdist.eval.plots import scan_figure

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs

# Signal fractions of the published scan (docs/reference.md).
PUBLISHED_FRACTIONS = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 1.0)
CLASSIFIERS = ("linear", "mlp")


def split_for_cwola(y: np.ndarray, *, seed: int = 0, test_fraction: float = 1 / 3):
    """Disjoint index sets (mixed-sample background, reference background, signal pool, test
    background, test signal) for binary truth y (n,). Background is split into three equal parts;
    signal into a pool for injection and a test part (``test_fraction``)."""
    rng = np.random.default_rng(seed)
    bkg = rng.permutation(np.flatnonzero(y == 0))
    sig = rng.permutation(np.flatnonzero(y == 1))
    b1, b2, bt = np.array_split(bkg, 3)
    n_st = max(1, int(round(test_fraction * sig.size)))
    return b1, b2, sig[n_st:], bt, sig[:n_st]


def mixed_sample(b_mix: np.ndarray, s_pool: np.ndarray, f: float, rng: np.random.Generator):
    """Indices of a mixed sample with signal fraction f: N = min(|B|, |S|/f) samples, round(f N)
    of them signal. Returns (indices, n_signal, n_background)."""
    n = b_mix.size if f <= 0 else int(min(b_mix.size, s_pool.size / f))
    n_s = int(round(f * n))
    n_b = n - n_s
    idx = np.concatenate([rng.choice(s_pool, n_s, replace=False), b_mix[:n_b]])
    return idx, n_s, n_b


def _fit_score(kind: str, x_tr, y_tr, x_te, seed: int) -> np.ndarray:
    if kind == "linear":
        return linear_scores(x_tr, y_tr, x_te, seed=seed)
    if kind == "mlp":
        # 64-32-1 network of the paper; early stopping on a 10% validation split ends training
        # well before max_iter, so no ConvergenceWarning in practice.
        clf = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(64, 32), early_stopping=True, validation_fraction=0.1,
            n_iter_no_change=10, max_iter=1000, learning_rate_init=1e-3, batch_size=256,
            random_state=seed))
        clf.fit(x_tr, y_tr)
        return clf.predict_proba(x_te)[:, 1]
    raise KeyError(f"unknown CWoLa classifier {kind!r}; known: {list(CLASSIFIERS)}")


def idealised_cwola_scan(rep: np.ndarray, label: np.ndarray, *,
                         fractions: Sequence[float] = PUBLISHED_FRACTIONS,
                         classifiers: Sequence[str] = CLASSIFIERS, seed: int = 0,
                         n_repeats: int = 3, figures: bool = True) -> EvalResult:
    """Scan the signal fraction f of the mixed sample.

    rep: (n, D) representations of labelled samples; label: (n,) store labels (-1 dropped,
    0 background, >= 1 signal). For each f and classifier, train mixed (class 1) vs reference
    background (class 0), score test signal vs test background (disjoint from both), average
    over ``n_repeats`` repeats (each with a fresh split of the training background into mixed
    and reference parts, a fresh signal draw and classifier seed; ``*_std`` metrics when > 1).
    At f = 0 the classifier learns noise: its test AUC scatters around 0.5 (widely, when the
    signal is far from the background) and is 0.5 on average over repeats.
    """
    keep, y = binary_labels(label)
    x = np.asarray(rep, dtype=np.float64)[keep]
    b_mix, b_ref, s_pool, b_test, s_test = split_for_cwola(y, seed=seed)
    b_train = np.concatenate([b_mix, b_ref])
    test_idx = np.concatenate([b_test, s_test])
    x_te, y_te = x[test_idx], y[test_idx]
    metrics: dict[str, float] = {}
    rows: list[dict] = []
    series: dict[str, dict[str, list[float]]] = {"auc": {}, "sic": {}}
    errors: dict[str, dict[str, list[float]]] = {"auc": {}, "sic": {}}
    for kind in classifiers:
        for f in fractions:
            vals: dict[str, list[float]] = {}
            for rep_i in range(n_repeats):
                rng = np.random.default_rng([seed, rep_i, int(f * 1e6)])
                if rep_i > 0:  # a fresh split of the training background per repeat
                    b_mix, b_ref = np.array_split(rng.permutation(b_train), 2)
                mix, n_s, n_b = mixed_sample(b_mix, s_pool, f, rng)
                x_tr = np.concatenate([x[mix], x[b_ref]])
                y_tr = np.concatenate([np.ones(mix.size, int), np.zeros(b_ref.size, int)])
                score = _fit_score(kind, x_tr, y_tr, x_te, seed + rep_i)
                m, _ = roc_metrics(y_te, score, "x", eps_s=(0.5,))
                for k in ("auc", "max_sic", "inv_eps_b_at_0.5"):
                    vals.setdefault(k, []).append(m[f"x_{k}"])
            tag = eps_tag(f)
            row = {"classifier": kind, "f": float(f), "n_sig_mixed": n_s, "n_bkg_mixed": n_b,
                   "n_bkg_reference": int(b_ref.size), "n_test_sig": int(s_test.size),
                   "n_test_bkg": int(b_test.size)}
            for k, v in vals.items():
                metrics[f"cwola_{kind}_{k}_f_{tag}"] = float(np.mean(v))
                row[k] = float(np.mean(v))
                if n_repeats > 1:
                    metrics[f"cwola_{kind}_{k}_std_f_{tag}"] = float(np.std(v, ddof=1))
                    row[f"{k}_std"] = float(np.std(v, ddof=1))
            rows.append(row)
            series["auc"].setdefault(kind, []).append(row["auc"])
            series["sic"].setdefault(kind, []).append(row["max_sic"])
            errors["auc"].setdefault(kind, []).append(row.get("auc_std", 0.0))
            errors["sic"].setdefault(kind, []).append(row.get("max_sic_std", 0.0))
    figs = {}
    if figures:
        fr = list(fractions)
        figs["cwola_auc_vs_f.png"] = scan_figure(
            fr, series["auc"], errors=errors["auc"] if n_repeats > 1 else None,
            xlabel="signal fraction $f$ in the mixed sample", ylabel="AUC (test)", hline=0.5,
            title="idealised CWoLa")
        figs["cwola_sic_vs_f.png"] = scan_figure(
            fr, series["sic"], errors=errors["sic"] if n_repeats > 1 else None,
            xlabel="signal fraction $f$ in the mixed sample", ylabel="max SIC (test)", hline=1.0,
            title="idealised CWoLa")
    return EvalResult(metrics=metrics, figures=figs, tables={"cwola_scan": rows})


def evaluate(inp: Inputs, **options: Any) -> EvalResult:
    """The runner's adapter: the scan on both sets pooled; its rows go into the comparison
    figures ``cwola_auc_vs_f.png`` / ``cwola_sic_vs_f.png`` (trained, untrained, raw)."""
    res = idealised_cwola_scan(inp.rep_all, inp.y_all, seed=inp.seed,
                               **{**options, "figures": False})
    if options.get("figures", True):
        inp.curve("cwola", res.tables["cwola_scan"])
    return res
