"""Classifier performance metrics used by every evaluation, and the result type they return.

Conventions (HEP): signal efficiency eps_S = true-positive rate, background efficiency
eps_B = false-positive rate, background rejection 1/eps_B, significance improvement
SIC = eps_S / sqrt(eps_B). Scores are "higher = more signal-like".

Metric names are flat and MLflow-safe (letters, digits, ``_ . - /``) and carry the evaluation's
prefix, e.g. ``lct_auc``, ``lct_inv_eps_b_at_0.5``, ``lct_max_sic``, ``lct_fpr_at_tpr_0.5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

# Signal efficiencies at which 1/eps_B is reported (docs/reference.md: 0.5, 0.3, 0.2).
DEFAULT_EPS_S = (0.5, 0.3, 0.2)
# Max SIC is taken only over working points with at least this background efficiency and at
# least MIN_BKG_EVENTS background events selected: beyond that the SIC is statistical noise.
DEFAULT_EPS_B_FLOOR = 1e-3
MIN_BKG_EVENTS = 10

_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-/]+$")


@dataclass
class EvalResult:
    """What every evaluation returns; ``clrdist.tracking.log_eval`` logs it to a run.

    metrics: flat name -> float (MLflow-safe names, prefixed by the evaluation).
    figures: file-name-like key (``"lct_roc.png"``) -> matplotlib Figure.
    tables: name -> list of row dicts (logged as JSON), e.g. the CWoLa scan per signal fraction.
    step_metrics: name -> list of (step, value), for curves vs a scanned quantity.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    step_metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.metrics:
            check_metric_name(name)

    def merge(self, other: EvalResult) -> EvalResult:
        """A new result holding both (names must not collide)."""
        clash = set(self.metrics) & set(other.metrics)
        if clash:
            raise ValueError(f"metric names collide: {sorted(clash)}")
        return EvalResult(
            metrics={**self.metrics, **other.metrics},
            figures={**self.figures, **other.figures},
            tables={**self.tables, **other.tables},
            step_metrics={**self.step_metrics, **other.step_metrics},
        )


def check_metric_name(name: str) -> str:
    if not _NAME_OK.match(name):
        raise ValueError(f"metric name {name!r} is not MLflow-safe (letters, digits, _ . - /)")
    return name


def binary_labels(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store labels (-1 unknown, 0 background, >= 1 signal) -> (keep mask, y in {0, 1}).

    Samples with unknown label (-1) are dropped by the evaluations that need truth.
    """
    label = np.asarray(label).reshape(-1)
    keep = label >= 0
    return keep, (label[keep] > 0).astype(np.int64)


@dataclass(frozen=True)
class Roc:
    """A ROC curve: eps_B (fpr) and eps_S (tpr), both non-decreasing, with class counts."""

    fpr: np.ndarray
    tpr: np.ndarray
    n_sig: int
    n_bkg: int


def roc(y: np.ndarray, score: np.ndarray, sample_weight: np.ndarray | None = None) -> Roc:
    """ROC of ``score`` for truth ``y`` (1 signal, 0 background); every threshold kept."""
    y = np.asarray(y).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    _check_binary(y)
    fpr, tpr, _ = roc_curve(y, score, sample_weight=sample_weight, drop_intermediate=False)
    return Roc(fpr=fpr, tpr=tpr, n_sig=int((y == 1).sum()), n_bkg=int((y == 0).sum()))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y).reshape(-1)
    _check_binary(y)
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64).reshape(-1)))


def eps_b_at(r: Roc, eps_s: float) -> float:
    """Background efficiency at signal efficiency ``eps_s`` (linear interpolation on the ROC)."""
    # tpr is non-decreasing; for repeated tpr values take the smallest fpr reaching eps_s.
    tpr, idx = np.unique(r.tpr, return_index=True)
    return float(np.interp(eps_s, tpr, r.fpr[idx]))


def inv_eps_b_at(r: Roc, eps_s: float) -> float:
    """Background rejection 1/eps_B at ``eps_s``.

    When no background survives (eps_B = 0) the rejection is only bounded by the sample size:
    return n_bkg, the largest value the test set can resolve, instead of infinity.
    """
    eb = eps_b_at(r, eps_s)
    return float(1.0 / max(eb, 1.0 / max(r.n_bkg, 1)))


def fpr_at_tpr(r: Roc, tpr: float = 0.5) -> float:
    return eps_b_at(r, tpr)


def sic_curve(r: Roc, *, eps_b_floor: float = DEFAULT_EPS_B_FLOOR,
              min_bkg_events: int = MIN_BKG_EVENTS) -> tuple[np.ndarray, np.ndarray]:
    """(eps_S, SIC) over the working points with eps_B >= max(floor, min_bkg_events / n_bkg)."""
    floor = max(eps_b_floor, min_bkg_events / max(r.n_bkg, 1))
    ok = r.fpr >= floor
    return r.tpr[ok], r.tpr[ok] / np.sqrt(r.fpr[ok])


def max_sic(r: Roc, *, eps_b_floor: float = DEFAULT_EPS_B_FLOOR,
            min_bkg_events: int = MIN_BKG_EVENTS) -> float:
    """max eps_S / sqrt(eps_B) over working points with enough background (see sic_curve)."""
    _, sic = sic_curve(r, eps_b_floor=eps_b_floor, min_bkg_events=min_bkg_events)
    return float(sic.max()) if sic.size else float("nan")


def eps_tag(x: float) -> str:
    """0.5 -> "0.5", 0.001 -> "0.001": a compact, MLflow-safe rendering for metric names."""
    return np.format_float_positional(float(x), trim="-")


def roc_metrics(y: np.ndarray, score: np.ndarray, prefix: str, *,
                eps_s: tuple[float, ...] = DEFAULT_EPS_S,
                eps_b_floor: float = DEFAULT_EPS_B_FLOOR,
                min_bkg_events: int = MIN_BKG_EVENTS) -> tuple[dict[str, float], Roc]:
    """The standard summary of a tagger: ``{prefix}_auc``, ``{prefix}_inv_eps_b_at_{e}`` for each
    e in ``eps_s``, ``{prefix}_max_sic`` and ``{prefix}_fpr_at_tpr_0.5``; also returns the ROC."""
    r = roc(y, score)
    m = {f"{prefix}_auc": auc(y, score)}
    for e in eps_s:
        m[f"{prefix}_inv_eps_b_at_{eps_tag(e)}"] = inv_eps_b_at(r, e)
    m[f"{prefix}_max_sic"] = max_sic(r, eps_b_floor=eps_b_floor, min_bkg_events=min_bkg_events)
    m[f"{prefix}_fpr_at_tpr_0.5"] = fpr_at_tpr(r, 0.5)
    for k in m:
        check_metric_name(k)
    return m, r


def per_signal_metrics(label: np.ndarray, score: np.ndarray, prefix: str, *,
                       names: dict[int, str] | None = None,
                       eps_s: tuple[float, ...] = DEFAULT_EPS_S,
                       eps_b_floor: float = DEFAULT_EPS_B_FLOOR) -> dict[str, float]:
    """One ROC summary per signal process, as the ADC2021 challenge reports: background (label
    0) against each signal label s >= 1 alone, ``{prefix}_<name>_auc``,
    ``{prefix}_<name>_inv_eps_b_at_<e>``, ... (name from ``names``, e.g. the store's
    label_names, else ``signal<s>``). Empty when the labels hold fewer than two signal processes
    (the combined ``{prefix}_*`` metrics already are that one). label: (n,) store labels
    aligned with score (n,); unknown (-1) samples are ignored."""
    lab = np.asarray(label).reshape(-1)
    s_all = np.asarray(score, dtype=np.float64).reshape(-1)
    signals = sorted(int(s) for s in np.unique(lab[lab > 0]))
    if len(signals) < 2 or not (lab == 0).any():
        return {}
    out: dict[str, float] = {}
    for s in signals:
        sel = (lab == 0) | (lab == s)
        name = re.sub(r"[^A-Za-z0-9_]", "_", str((names or {}).get(s, f"signal{s}")))
        m, _ = roc_metrics((lab[sel] == s).astype(np.int64), s_all[sel], f"{prefix}_{name}",
                           eps_s=eps_s, eps_b_floor=eps_b_floor)
        out.update(m)
    return out


def bootstrap_metrics(y: np.ndarray, score: np.ndarray, prefix: str, *, n_boot: int = 50,
                      seed: int = 0, **kw) -> dict[str, float]:
    """Bootstrap standard deviations of :func:`roc_metrics` over test-set resamples.

    Resamples signal and background separately (class counts fixed) ``n_boot`` times; returns
    ``{name}_std`` for every metric. Captures the test-set statistical uncertainty only (the
    classifier is not refitted).
    """
    y = np.asarray(y).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    sig, bkg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(sig, sig.size), rng.choice(bkg, bkg.size)])
        m, _ = roc_metrics(y[idx], score[idx], prefix, **kw)
        for k, v in m.items():
            samples.setdefault(k, []).append(v)
    return {f"{k}_std": float(np.nanstd(v, ddof=1)) for k, v in samples.items()}


def _check_binary(y: np.ndarray) -> None:
    vals = set(np.unique(y).tolist())
    if not vals <= {0, 1} or len(vals) < 2:
        raise ValueError(f"need binary truth with both classes (0, 1); got values {sorted(vals)}")
