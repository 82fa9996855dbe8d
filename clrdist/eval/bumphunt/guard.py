"""The sculpting guard and the optional decorrelation of a CWoLa hunt's features (step 0 of
:mod:`clrdist.eval.bumphunt`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

MAX_MJJ_CORR = 0.1  # refuse features whose out-of-fold ln m_jj regression correlates more
# (Pythia dijets, docs/bumphunt.md: m_J and tau21 at 0.10 already sculpt visibly; an encoder
# reading pT / 600 GeV 0.15; a ptfrac representation 0.14 trained; boost inputs 0.02 trained)


class MjjCorrelationError(ValueError):
    """The hunt's features predict m_jj: the classifier would sculpt the spectrum.
    ``corr``: the measured out-of-fold correlation."""

    def __init__(self, message: str, corr: float = float("nan")):
        super().__init__(message)
        self.corr = corr



@dataclass
class MjjDependence:
    corr: float  # out-of-fold Pearson correlation of predicted and true ln m_jj
    r2: float  # out-of-fold coefficient of determination
    n: int  # events used


def mjj_dependence(mjj: np.ndarray, x: np.ndarray, *, k: int = 3, seed: int = 0,
                   max_samples: int = 20000) -> MjjDependence:
    """How well the features x (n, D) predict ln m_jj (n,), out of fold: gradient-boosted
    regression trees trained on k - 1 folds predict the k-th. Trees, because they are the most
    sensitive: after decorrelation a linear model finds nothing by construction, while trees
    still find m_jj in the shapes of the features' distributions (docs/bumphunt.md: 0.70 for an
    encoder reading absolute pT). A signal at a share f of the events adds little to the
    explained variance (of order f), but the correlation of the shrunk predictions grows faster:
    a toy signal of 3% at 2.5 sigma in one feature gives R^2 0.005 and correlation 0.11 (tested),
    above the default limit."""
    # lazy: scikit-learn's boosted trees (~150 ms) only when the m_jj guard runs
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng([seed, 0x3a1])
    idx = rng.permutation(len(mjj))[:max_samples]
    t, xx = np.log(np.asarray(mjj, float)[idx]), np.asarray(x, float)[idx]
    fold = np.arange(len(idx)) % k
    pred = np.empty(len(idx))
    for g in range(k):
        reg = HistGradientBoostingRegressor(max_iter=50, max_leaf_nodes=15, learning_rate=0.15,
                                            early_stopping=False, random_state=seed)
        with threadpool_limits(1):  # OpenMP on a loaded machine: 50x slower with all cores
            reg.fit(xx[fold != g], t[fold != g])
            pred[fold == g] = reg.predict(xx[fold == g])
    corr = float(np.corrcoef(pred, t)[0, 1]) if np.std(pred) > 0 else 0.0
    r2 = float(1 - np.mean((t - pred) ** 2) / max(np.var(t), 1e-300))
    return MjjDependence(corr=corr if np.isfinite(corr) else 0.0, r2=r2, n=len(idx))


def check_mjj_dependence(mjj: np.ndarray, x: np.ndarray, *, max_corr: float = MAX_MJJ_CORR,
                         allow: bool = False, seed: int = 0) -> MjjDependence:
    """:func:`mjj_dependence`, refused above ``max_corr`` unless ``allow``."""
    dep = mjj_dependence(mjj, x, seed=seed)
    if dep.corr > max_corr and not allow:
        raise MjjCorrelationError(
            f"bump hunt refused: the {x.shape[1]} features predict m_jj (out-of-fold correlation "
            f"{dep.corr:.3f} of a gbdt regression of ln m_jj on them, R^2 {dep.r2:.3f}, {dep.n} events; "
            f"limit {max_corr}); the SR-vs-SB classifier would sculpt a bump. Use inputs without an "
            f"absolute scale (model.input_features: boost) or pass allow_mjj_correlated=True (a "
            f"strong localised signal, a few % of the events and well separated in the features, "
            f"can trip this check by itself: then the R^2 is small and the override is right)",
            corr=dep.corr)
    return dep


DECORRELATIONS = ("sideband", "none")


def decorrelate_mjj(mjj: np.ndarray, x: np.ndarray, fit_on: np.ndarray, *,
                    degree: int = 2) -> np.ndarray:
    """Features with their mean's smooth m_jj dependence removed, fitted on ``fit_on`` only.

    Per feature, the mean is fitted as a polynomial of degree ``degree`` in ln m_jj by least
    squares over the ``fit_on`` events (a hunt passes the events outside its signal region, so a
    resonance inside it cannot be fitted away), and subtracted from every event. Then every
    linear combination of the features has a mean flat in m_jj (to that order): what a linear
    SR-vs-SB classifier could sculpt from. Widths are left alone: standardising each feature's
    spread as well was measured to make the selections of untrained encoders less flat, since
    the spread of a combination depends on the features' covariances, not on their own spreads
    (docs/bumphunt.md). What remains is measured by the guard and the flatness test.
    mjj: (n,) GeV; x: (n, D); fit_on: (n,) bool."""
    t = np.log(np.asarray(mjj, dtype=np.float64))
    fit_on = np.asarray(fit_on, bool)
    if fit_on.sum() <= 2 * (degree + 1):
        raise ValueError(f"m_jj decorrelation needs more than {2 * (degree + 1)} events to fit "
                         f"on; got {int(fit_on.sum())}")
    t0, ts = t[fit_on].mean(), max(float(t[fit_on].std()), 1e-12)
    v = np.vander((t - t0) / ts, degree + 1)
    x = np.asarray(x, dtype=np.float64)
    return x - v @ np.linalg.lstsq(v[fit_on], x[fit_on], rcond=None)[0]


def _features_for(decorrelate: str, mjj: np.ndarray, x: np.ndarray,
                  fit_on: np.ndarray) -> np.ndarray:
    if decorrelate == "none":
        return x
    if decorrelate == "sideband":
        return decorrelate_mjj(mjj, x, fit_on)
    raise ValueError(f"decorrelate: {decorrelate!r}; known: {list(DECORRELATIONS)}")


def whiten_given_jet_pt(x: np.ndarray, jet_pt: np.ndarray, *, n_bins: int = 10) -> np.ndarray:
    """Per-jet features whose mean and covariance no longer depend on the jet's own pT.

    A dijet event's m_jj grows with its jets' pT, and a jet's substructure changes slowly with
    its pT even on inputs without an absolute scale (more radiation, a different quark/gluon
    mix): an SR-vs-SB classifier finds that and its tight cuts sculpt. Here the jets are dealt
    into ``n_bins`` quantile bins of ln pT, and in each bin the features are centred on the bin's
    mean and multiplied by the inverse Cholesky factor of the bin's covariance: every linear
    combination then has mean 0 and the same spread in every pT bin (conditional whitening, to
    second order; what a linear classifier and its threshold see). Fitted on all the jets given,
    without m_jj or labels: a localised signal shares its pT bins with the background there and
    keeps almost all of its separation (tested). Measured on Pythia dijets in docs/bumphunt.md.
    x: (n, D) features of n jets; jet_pt: (n,) GeV. Returns (n, D) float64."""
    x = np.asarray(x, dtype=np.float64)
    pt = np.asarray(jet_pt, dtype=np.float64)
    if x.ndim != 2 or pt.shape != (len(x),):
        raise ValueError(f"whiten_given_jet_pt: x must be (n, D) and jet_pt (n,); got "
                         f"{x.shape} and {pt.shape}")
    if not np.all(np.isfinite(pt) & (pt > 0)):
        raise ValueError("whiten_given_jet_pt: jet_pt must be finite and > 0 for every jet")
    lpt = np.log(pt)
    need = 2 * (x.shape[1] + 1)
    if len(x) < n_bins * need:
        raise ValueError(f"whiten_given_jet_pt: {len(x)} jets for {n_bins} pT bins of "
                         f"{x.shape[1]} features; each bin needs at least {need}")
    edges = np.quantile(lpt, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    which = np.searchsorted(edges, lpt, side="right")
    out = np.empty_like(x)
    for k in range(n_bins):
        jets = which == k
        if not jets.any():  # ties in pT can leave a quantile bin empty
            continue
        xs = x[jets]
        xs = xs - xs.mean(0)
        cov = np.atleast_2d(np.cov(xs, rowvar=False))
        cov += 1e-9 * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
        out[jets] = np.linalg.solve(np.linalg.cholesky(cov), xs.T).T
    return out


def whiten_dijet_given_jet_pt(x: np.ndarray, pt_j1: np.ndarray, pt_j2: np.ndarray, *,
                              n_bins: int = 10) -> np.ndarray:
    """:func:`whiten_given_jet_pt` for event features made of two jets side by side (the first
    half of the columns the leading jet's, the second the subleading's): both jets' features
    are whitened together, each jet against its own pT. x: (n, 2 D); pt_j1, pt_j2: (n,) GeV."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"whiten_dijet_given_jet_pt: x must be (n, 2 D); got {x.shape}")
    d, n = x.shape[1] // 2, len(x)
    jets = whiten_given_jet_pt(np.concatenate([x[:, :d], x[:, d:]]),
                               np.concatenate([pt_j1, pt_j2]), n_bins=n_bins)
    return np.concatenate([jets[:n], jets[n:]], 1)
