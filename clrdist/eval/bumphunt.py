"""CWoLa hunting (Collins, Howe, Nachman, arXiv:1805.02664 / 1902.02634) on dijet samples, blind.

The signal region is never taken from the truth labels. :func:`blind_scan` slides a window over
the whole m_jj spectrum and, per window:

0a. Optional decorrelation (``decorrelate="sideband"``; the default ``"none"`` hunts on the
   features as given): per window, each feature's mean is fitted as a quadratic in ln m_jj over
   the events outside the SR and subtracted from every event (:func:`decorrelate_mjj`). The SR's
   own events never enter the fit, so a resonance cannot be fitted away. It helps features whose
   mean tracks m_jj (a ptfrac representation, whose jets' angular size goes as 1/pT) and hurts
   features that barely depend on m_jj (docs/bumphunt.md: the fit's own errors add m_jj
   dependence that trees find); the remedy for representations is inputs without an absolute
   angle (``model.input_features: boost``).
0. Sculpting guard (before anything is trained): an out-of-fold regression of ln m_jj on the
   (decorrelated) features by gradient-boosted trees (:func:`mjj_dependence`, k = 3: the most
   sensitive family; after decorrelation a linear model finds nothing by construction). The SR-vs-SB classifier
   learns any m_jj information in its inputs and makes a bump of background where there was
   none; the look-elsewhere toys cannot reproduce such a bump. When the regression's
   out-of-fold correlation exceeds ``max_mjj_corr`` (0.1) the hunt is refused
   (:class:`MjjCorrelationError`, the measured correlation in the message) unless
   ``allow_mjj_correlated=True``; the correlation is reported either way (``_mjj_corr``).
   Representations for the hunt should come from inputs without an absolute scale (each jet
   encoded alone, ``model.input_features: boost``: pT fractions, and angles relative to the jet
   axis in units of the jet's own angular size m/pT; docs/bumphunt.md).
1. Bins: log-spaced m_jj bins; the signal region (SR) is ``sr_bins`` bins, the classifier's
   sidebands (SB) the ``sb_bins`` bins on each side.
2. A classifier learns SR (class 1) vs SB (class 0) from the event features (the
   representation). Every event in the m_jj range (SR, SB and the bins outside) is dealt to one
   of k = 5 folds. For each fold, the other folds' SR/SB events train k - 1 models (each other
   fold once the validation fold); their average scores *every* event of the fold. The
   validation log loss is reported next to its no-information value, the entropy of the SR
   share of the training events (ln 2 only for equal SR and SB sizes).
3. Selection-efficiency scan: for each eps in ``efficiencies``, an event passes when its score
   is above the threshold that keeps a fraction eps of its own fold's sideband events. One model
   family and one threshold definition for every event, inside and outside SR u SB, so the
   background-only efficiency is flat in m_jj (no step at the sideband edges; tested, and
   checked in every window by :func:`efficiency_flatness`, a chi2 against a flat efficiency;
   ``_flatness_p`` combines the windows and efficiencies < 1 by Bonferroni).
4. Fit f(y) = p1 (1-y)^p2 y^-p3, y = m_jj / sqrt(s), to the selected counts of all bins outside
   the SR by a binned Poisson likelihood (log-linear in the parameters: Newton's method on a
   convex function, right in the sparse bins at eps <= 0.01 where least squares is biased);
   predict the SR background with its uncertainty from the inverse Fisher information. sqrt(s)
   comes from the store (``provenance.ecm``). A fit that fails is reported (``fit_ok`` false,
   Z = nan, counted in ``_n_failed_fits``), never turned into Z = 0; every row carries chi2/ndf
   (Pearson).
5. Local significance of the SR count vs the prediction (Cowan's formula for a Poisson count with
   a Gaussian background uncertainty), signed.

Global significance (:func:`global_significance`): the largest local Z over all windows and
efficiencies, against the same maximum in background-only toys. Smooth toys (``n_toys``, cheap):
per window and efficiency the selected spectrum's background-only fit gives Poisson means; each
toy redraws the spectra (eps = 1 shares one spectrum across windows, as the data do; the others
are drawn independently per window: conservative) and repeats steps 4-5. Full toys
(``n_full_toys``, each a whole hunt, classifier included): the m_jj values are permuted over the
events, which keeps the spectrum and the features and removes any feature-m_jj relation (valid
because step 0 checked there is none to speak of); they add the classifier's own fluctuations.
Beyond the toys: the toys' maxima are fitted as the maximum of N_eff independent unit normals,
P(max Z < z) = Phi(z)^N_eff (one parameter, closed-form maximum likelihood, N_eff clipped to
[1, number of tests]); the global p is the empirical (k + 1) / (n + 1) while at least
``MIN_TAIL`` toys reach the observed maximum, else the fitted tail. The fitted p always lies
between the local p and the Bonferroni bound n_tests * p_local, which hold for any correlation;
the fit's Kolmogorov-Smirnov p-value on the toys is reported (``_toy_fit_ks_p``) as its check.

:func:`hunt_at_fractions` runs the scan at LHCO-like signal fractions (0 as the control, 0.1%,
0.3%, 1% of all events) made by mixing signal events into the background (``mix_signal``),
never on the ~50% signal of a labelled store; each point is named by its fraction and carries
the actual injected count (``_n_sig``; a fraction that rounds to no signal event is refused).
The hunt itself sees only the mixture (:func:`hunt_mixture`; the truth is used for diagnostics
after the window is chosen, tested by hunting with shuffled truth). Metric names, per fraction f
(tag as in ``eps_tag``): ``bumphunt_f_0.01_max_local_z``, ``_global_z``, ``_global_p``,
``_global_from_fit`` (1 when the fitted tail gave it), ``_global_p_empirical``, ``_n_eff``,
``_toy_fit_ks_p``, ``_n_toys`` (and ``_global_z_full_toys``, ``_n_full_toys``), ``_flatness_p``, ``_best_sr_lo``, ``_best_sr_hi``, ``_best_eps``, ``_n_sig``, ``_n_bkg``,
``_val_logloss``, ``_val_logloss_ref``, ``_mjj_corr``, ``_n_failed_fits``, and the
after-the-fact diagnostic ``_signal_in_best_sr`` (the injected signal's share inside the chosen
SR); table ``bumphunt_scan`` (every window, efficiency and fraction); figures
``bumphunt_f_<f>_scan.png``. :func:`cwola_hunt` is the same analysis in one given signal region
(``bumphunt_z_eps_0.01``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats
from sklearn.metrics import log_loss

from clrdist.eval.metrics import EvalResult, eps_tag

EFFICIENCIES = (1.0, 0.1, 0.01, 0.002)
SCAN_EFFICIENCIES = (1.0, 0.1, 0.01)
SIGNAL_FRACTIONS = (0.0, 0.001, 0.003, 0.01)  # f = 0 (control), then LHCO-like signal shares
MAX_MJJ_CORR = 0.1  # refuse features whose out-of-fold ln m_jj regression correlates more
# (Pythia dijets, docs/bumphunt.md: m_J and tau21 at 0.10 already sculpt visibly; an encoder
# reading pT / 600 GeV 0.15; a ptfrac representation 0.14 trained; boost inputs 0.02 trained)
MIN_TAIL = 10  # toys at or above the observed maximum for the empirical global p


class MjjCorrelationError(ValueError):
    """The hunt's features predict m_jj: the classifier would sculpt the spectrum.
    ``corr``: the measured out-of-fold correlation."""

    def __init__(self, message: str, corr: float = float("nan")):
        super().__init__(message)
        self.corr = corr


def dijet_function(y: np.ndarray, log_p1: float, p2: float, p3: float) -> np.ndarray:
    """f(y) = p1 (1-y)^p2 y^-p3 with p1 = exp(log_p1) (keeps the fit well scaled)."""
    return np.exp(log_p1 + p2 * np.log1p(-y) - p3 * np.log(y))


def log_bins(lo: float, hi: float, n: int) -> np.ndarray:
    return np.geomspace(lo, hi, n + 1)


# ---------------------------------------------------------------------------------------------
# step 0: does the representation know m_jj?

@dataclass
class MjjDependence:
    corr: float  # out-of-fold Pearson correlation of predicted and true ln m_jj
    r2: float  # out-of-fold coefficient of determination
    n: int  # events used


def _make_regressor(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbdt":
        return HistGradientBoostingRegressor(max_iter=50, max_leaf_nodes=15, learning_rate=0.15,
                                             early_stopping=False, random_state=seed)
    if kind == "linear":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 7)))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(
            hidden_layer_sizes=(64, 32), early_stopping=True, n_iter_no_change=10,
            max_iter=300, batch_size=256, random_state=seed))
    raise KeyError(f"unknown regressor {kind!r}; known: ['gbdt', 'linear', 'mlp']")


def mjj_dependence(mjj: np.ndarray, x: np.ndarray, *, k: int = 3, seed: int = 0,
                   max_samples: int = 20000, kind: str = "gbdt") -> MjjDependence:
    """How well the features x (n, D) predict ln m_jj (n,), out of fold: a regressor of the
    family ``kind`` (``gbdt`` gradient-boosted trees, the default and the most sensitive;
    ``linear`` ridge; ``mlp``) trained on k - 1 folds predicts the k-th. After decorrelation a
    linear model finds nothing by construction, while trees still find m_jj in the shapes of
    the features' distributions (docs/bumphunt.md: 0.70 for an encoder reading absolute pT). A signal at a share f of the events adds little
    to the explained variance (of order f), but the correlation of the shrunk predictions grows
    faster: a toy signal of 3% at 2.5 sigma in one feature gives R^2 0.005 and correlation 0.11
    with trees (tested), above the default limit."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([seed, 0x3a1])
    idx = rng.permutation(len(mjj))[:max_samples]
    t, xx = np.log(np.asarray(mjj, float)[idx]), np.asarray(x, float)[idx]
    fold = np.arange(len(idx)) % k
    pred = np.empty(len(idx))
    for g in range(k):
        reg = _make_regressor(kind, seed)
        with threadpool_limits(1):  # OpenMP on a loaded machine: 50x slower with all cores
            reg.fit(xx[fold != g], t[fold != g])
            pred[fold == g] = reg.predict(xx[fold == g])
    corr = float(np.corrcoef(pred, t)[0, 1]) if np.std(pred) > 0 else 0.0
    r2 = float(1 - np.mean((t - pred) ** 2) / max(np.var(t), 1e-300))
    return MjjDependence(corr=corr if np.isfinite(corr) else 0.0, r2=r2, n=len(idx))


def check_mjj_dependence(mjj: np.ndarray, x: np.ndarray, *, max_corr: float = MAX_MJJ_CORR,
                         allow: bool = False, seed: int = 0, kind: str = "gbdt") -> MjjDependence:
    """:func:`mjj_dependence` (regressor family ``kind``), refused above ``max_corr`` unless
    ``allow``."""
    dep = mjj_dependence(mjj, x, seed=seed, kind=kind)
    if dep.corr > max_corr and not allow:
        raise MjjCorrelationError(
            f"bump hunt refused: the {x.shape[1]} features predict m_jj (out-of-fold correlation "
            f"{dep.corr:.3f} of a {kind} regression of ln m_jj on them, R^2 {dep.r2:.3f}, {dep.n} events; "
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


# ---------------------------------------------------------------------------------------------
# step 4: the background fit

@dataclass
class SidebandFit:
    n_bkg: float  # predicted SR background
    sigma_bkg: float  # its uncertainty from the inverse Fisher information
    params: np.ndarray  # (log_p1, p2, p3) of dijet_function; nan when the fit failed
    chi2_ndf: float  # Pearson chi2 / (fitted bins - 3)
    ok: bool = True
    problem: str = ""


def _failed(problem: str) -> SidebandFit:
    return SidebandFit(float("nan"), float("nan"), np.full(3, np.nan), float("nan"), False, problem)


def fit_sidebands(edges: np.ndarray, counts: np.ndarray, sr: tuple[int, int], sqrt_s: float,
                  start: np.ndarray | None = None) -> SidebandFit:
    """Fit the dijet function to the bin counts outside bins [sr[0], sr[1]) by a binned Poisson
    likelihood and predict the SR.

    Bin means mu_i = f(y_i) dy_i (y_i the bin's geometric centre): ln mu is linear in
    (ln p1, p2, p3), so the negative log likelihood is convex and Newton's method (with step
    halving) finds its minimum. ``start``: initial (ln p1, p2, p3) (the toys start from the fit
    they were drawn from). The fit fails (``ok`` false, with the reason) with fewer than 4
    populated bins outside the SR, or when Newton's method does not converge."""
    y_lo, y_hi = edges[:-1] / sqrt_s, edges[1:] / sqrt_s
    yc, dy = np.sqrt(y_lo * y_hi), y_hi - y_lo
    cols = np.stack([np.log1p(-yc), -np.log(yc)], 1)
    m, s = cols.mean(0), cols.std(0)
    s = np.where(s > 0, s, 1.0)
    X = np.c_[np.ones(len(yc)), (cols - m) / s]  # well-conditioned basis
    off = np.log(dy)
    out = np.ones(len(counts), bool)
    out[sr[0]:sr[1]] = False
    n = np.asarray(counts, float)[out]
    Xo, oo = X[out], off[out]
    if (n > 0).sum() < 4:
        return _failed(f"{int((n > 0).sum())} populated bins outside the SR (need 4)")
    if start is not None and np.all(np.isfinite(start)):
        beta = np.array([start[0] + start[1] * m[0] + start[2] * m[1], start[1] * s[0],
                         start[2] * s[1]])
    else:
        beta = np.array([np.log(n.sum() / np.exp(oo).sum()), 0.0, 0.0])

    def nll(b):
        eta = Xo @ b + oo
        return float(np.sum(np.exp(eta) - n * eta))

    cur = nll(beta)
    for _ in range(100):
        mu = np.exp(Xo @ beta + oo)
        grad = Xo.T @ (n - mu)
        hess = (Xo * mu[:, None]).T @ Xo
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return _failed("singular Fisher information")
        t = 1.0
        while t > 1e-6:
            new = nll(beta + t * step)
            if np.isfinite(new) and new <= cur + 1e-12 * abs(cur):
                break
            t /= 2
        else:
            break
        beta, cur = beta + t * step, new
        if np.max(np.abs(t * step)) < 1e-9:
            break
    mu = np.exp(Xo @ beta + oo)
    grad = Xo.T @ (n - mu)
    hess = (Xo * mu[:, None]).T @ Xo
    if not np.all(np.isfinite(beta)) or np.max(np.abs(grad)) > 1e-4 * max(1.0, np.sqrt(n.sum())):
        return _failed("the Poisson likelihood fit did not converge")
    cov = np.linalg.inv(hess)
    mu_sr = np.exp(X[sr[0]:sr[1]] @ beta + off[sr[0]:sr[1]])
    g = (X[sr[0]:sr[1]] * mu_sr[:, None]).sum(0)  # d(sum mu_SR) / d beta
    chi2 = float(np.sum((n - mu) ** 2 / mu))
    p2, p3 = beta[1] / s[0], beta[2] / s[1]
    params = np.array([beta[0] - p2 * m[0] - p3 * m[1], p2, p3])
    return SidebandFit(float(mu_sr.sum()), float(np.sqrt(max(g @ cov @ g, 0.0))), params,
                       chi2 / max(len(n) - 3, 1))


def significance(n: float, b: float, sigma_b: float) -> float:
    """Signed local significance of n observed for b +- sigma_b expected (Cowan's profile
    likelihood formula for a Poisson count with a Gaussian-constrained background); nan when
    there is no prediction (a failed fit)."""
    if not (np.isfinite(b) and np.isfinite(sigma_b)) or b <= 0:
        return float("nan")
    if sigma_b <= 1e-9 * b:
        z2 = 2 * ((n * np.log(n / b) if n > 0 else 0.0) - (n - b))
    else:
        s2 = sigma_b**2
        t1 = n * np.log(n * (b + s2) / (b * b + n * s2)) if n > 0 else 0.0
        t2 = (b * b / s2) * np.log1p(s2 * (n - b) / (b * (b + s2)))
        z2 = 2 * (t1 - t2)
    return float(np.sign(n - b) * np.sqrt(max(z2, 0.0)))


# ---------------------------------------------------------------------------------------------
# global significance beyond the toy count

@dataclass
class GlobalSignificance:
    p: float
    z: float
    from_fit: bool  # True: fewer than MIN_TAIL toys reached the observed maximum
    p_empirical: float  # (k + 1) / (n + 1)
    n_eff: float  # fitted effective number of independent tests
    ks_p: float  # Kolmogorov-Smirnov p of the toys against Phi(z)^n_eff
    n_tests: int
    n_toys: int


def fit_n_eff(toys_max_z: np.ndarray, n_tests: int) -> float:
    """Maximum-likelihood N_eff of P(max Z < z) = Phi(z)^N_eff for the toys' maxima:
    N_eff = -n / sum ln Phi(z_i), clipped to [1, n_tests]."""
    t = np.asarray(toys_max_z, float)
    t = t[np.isfinite(t)]
    s = float(-special.log_ndtr(t).sum())
    return float(np.clip(len(t) / s if s > 0 else n_tests, 1.0, max(n_tests, 1)))


def global_significance(max_z: float, toys_max_z: np.ndarray, n_tests: int, *,
                        min_tail: int = MIN_TAIL) -> GlobalSignificance:
    """Global p and Z of an observed maximum local Z (module docstring: empirical while at least
    ``min_tail`` toys reach it, else the fitted Phi(z)^N_eff tail)."""
    t = np.asarray(toys_max_z, float)
    t = t[np.isfinite(t)]
    k = int((t >= max_z).sum())
    p_emp = (k + 1) / (len(t) + 1)
    n_eff = fit_n_eff(t, n_tests) if len(t) else float(n_tests)
    # 1 - Phi(z)^N, accurate far in the tail
    p_fit = float(-np.expm1(n_eff * special.log_ndtr(max_z)))
    ks = float(stats.kstest(t, lambda z: np.exp(n_eff * special.log_ndtr(z))).pvalue) \
        if len(t) >= 5 else float("nan")
    from_fit = k < min_tail
    p = p_fit if from_fit else p_emp
    return GlobalSignificance(p=p, z=float(stats.norm.isf(p)), from_fit=from_fit,
                              p_empirical=p_emp, n_eff=n_eff, ks_p=ks, n_tests=n_tests,
                              n_toys=len(t))


# ---------------------------------------------------------------------------------------------
# steps 2-3: the classifier and the selection

def _make_classifier(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(64, 32), early_stopping=True, n_iter_no_change=10,
            max_iter=1000, batch_size=256, random_state=seed))
    if kind == "gbdt":  # nonlinear and cheap (boxes in m_J, tau21); early stopping on 20%
        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, max_leaf_nodes=15, early_stopping=True,
            validation_fraction=0.2, n_iter_no_change=10, random_state=seed)
    raise KeyError(f"unknown classifier {kind!r}; known: ['gbdt', 'linear', 'mlp']")


@dataclass
class FoldScores:
    score: np.ndarray  # (n,) out-of-fold classifier score
    fold: np.ndarray  # (n,) fold of each event
    val_loss: float  # mean SR-vs-SB validation log loss
    val_loss_ref: float  # the same for a constant prediction at the training SR share


def fold_scores(x: np.ndarray, target: np.ndarray, train: np.ndarray, *, k: int = 5,
                classifier: str = "mlp", seed: int = 0) -> FoldScores:
    """Scores of every event from the models of its own fold.

    x: (n, D) features of all events; target: (n,) SR = 1 / SB = 0 (ignored outside ``train``);
    train: (n,) bool, the SR u SB events the classifiers learn from. For each test fold, every
    other fold serves once as validation fold (its SR-vs-SB log loss is the diagnostic) while the
    remaining k - 2 are trained on; the k - 1 models' average scores all events of the test
    fold, inside and outside SR u SB alike (none of those models saw them). "Nothing learnt" is
    the log loss of the constant SR share p of the training events, -p ln p - (1-p) ln(1-p)
    on average (ln 2 only when SR and SB are equal in size)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % k
    score = np.zeros(len(x))
    losses: list[float] = []
    refs: list[float] = []
    for test in range(k):
        in_test = fold == test
        preds = []
        for val in range(k):
            if val == test:
                continue
            tr = train & (fold != test) & (fold != val)
            va = train & (fold == val)
            clf = _make_classifier(classifier, seed + 31 * test + val)
            with threadpool_limits(1):  # (gbdt: OpenMP oversubscribes a loaded machine)
                clf.fit(x[tr], target[tr])
                losses.append(log_loss(target[va], clf.predict_proba(x[va])[:, 1], labels=[0, 1]))
                preds.append(clf.predict_proba(x[in_test])[:, 1])
            prior = float(np.clip(target[tr].mean(), 1e-6, 1 - 1e-6))
            refs.append(log_loss(target[va], np.full(int(va.sum()), prior), labels=[0, 1]))
        score[in_test] = np.mean(preds, axis=0)
    return FoldScores(score, fold, float(np.mean(losses)), float(np.mean(refs)))


def select(score: np.ndarray, fold: np.ndarray, in_sb: np.ndarray, eps: float) -> np.ndarray:
    """(n,) bool: events whose score passes the threshold that keeps a fraction ``eps`` of the
    sideband events of their own fold (each fold's models have their own output scale and
    intercept: one global threshold on pooled scores sculpts deficits into the SR). The same
    rule for every event, whatever its m_jj."""
    if eps >= 1:
        return np.ones(len(score), bool)
    sel = np.zeros(len(score), bool)
    for g in np.unique(fold):
        in_g = fold == g
        ref = in_g & in_sb
        if ref.any():
            sel[in_g] = score[in_g] > np.quantile(score[ref], 1 - eps)
    return sel


@dataclass
class Window:
    """One signal region: bins [lo, hi) with ``sb`` sideband bins each side."""

    lo: int
    hi: int
    sb: int


def _bins(mjj: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, mjj, side="right") - 1, 0, len(edges) - 2)


def window_selections(b: np.ndarray, x: np.ndarray, w: Window, efficiencies: Sequence[float], *,
                      k: int = 5, classifier: str = "mlp", seed: int = 0
                      ) -> tuple[dict[float, np.ndarray], FoldScores]:
    """{eps: (n,) bool selection} of every event (bin index ``b``) for window ``w``, and the
    classifier's scores and validation log losses."""
    in_sr = (b >= w.lo) & (b < w.hi)
    in_sb = ((b >= w.lo - w.sb) & (b < w.lo)) | ((b >= w.hi) & (b < w.hi + w.sb))
    fs = fold_scores(x, in_sr.astype(int), in_sr | in_sb, k=k, classifier=classifier, seed=seed)
    return {eps: select(fs.score, fs.fold, in_sb, eps) for eps in efficiencies}, fs


def efficiency_flatness(b: np.ndarray, sel: np.ndarray, fold: np.ndarray, n_bins: int, *,
                        min_expected: float = 5.0) -> tuple[float, int, float]:
    """Background-only check that a selection keeps the same fraction of the events in every
    m_jj bin: (chi2, ndf, p) of the selected counts per bin against sum_g eps_g n_bg with
    binomial errors, eps_g the selection's overall efficiency in fold g (each fold has its own
    threshold, estimated from its sideband events: its efficiency differs from the nominal eps by
    that estimate's error, a normalisation and not a shape). Neighbouring bins are merged until
    each expects at least ``min_expected`` selected events (the chi2 distribution needs it at
    eps = 0.01). ndf = merged bins - folds."""
    folds = np.unique(fold)
    k_sel, mean, var = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for g in folds:
        in_g = fold == g
        n_g = np.bincount(b[in_g], minlength=n_bins).astype(float)
        eff = float(sel[in_g].mean())
        k_sel += np.bincount(b[in_g & sel], minlength=n_bins)
        mean += eff * n_g
        var += eff * (1 - eff) * n_g
    groups, acc = [], []
    for i in range(n_bins):
        acc.append(i)
        if mean[acc].sum() >= min_expected:
            groups.append(acc)
            acc = []
    if acc and groups:
        groups[-1] += acc
    ks = np.array([k_sel[g].sum() for g in groups])
    mu = np.array([mean[g].sum() for g in groups])
    v = np.array([var[g].sum() for g in groups])
    use = v > 0
    ndf = int(use.sum()) - len(folds)
    if ndf <= 0:
        return 0.0, 0, 1.0
    chi2 = float(np.sum((ks[use] - mu[use]) ** 2 / v[use]))
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf))


def _window_result(edges, b, sel, w: Window, sqrt_s):
    counts = np.bincount(b[sel], minlength=len(edges) - 1)
    fit = fit_sidebands(edges, counts, (w.lo, w.hi), sqrt_s)
    n_obs = float(counts[w.lo:w.hi].sum())
    return counts, fit, n_obs, significance(n_obs, fit.n_bkg, fit.sigma_bkg)


def _prepare(mjj, features, mjj_range):
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(mjj):
        raise ValueError(f"features must be (n, D) with n = {len(mjj)} m_jj values; got {x.shape}")
    inside = (mjj >= mjj_range[0]) & (mjj < mjj_range[1])
    return mjj[inside], x[inside], inside


def cwola_hunt(mjj: np.ndarray, features: np.ndarray, *, sr: tuple[float, float],
               mjj_range: tuple[float, float], n_bins: int = 20, sb_bins: int = 2,
               sqrt_s: float, efficiencies: Sequence[float] = EFFICIENCIES,
               classifier: str = "mlp", k: int = 5, seed: int = 0, prefix: str = "bumphunt",
               max_mjj_corr: float = MAX_MJJ_CORR, allow_mjj_correlated: bool = False,
               decorrelate: str = "none", figures: bool = True) -> EvalResult:
    """CWoLa bump hunt in one given signal region (for a blind search use :func:`blind_scan`).

    mjj: (n,) dijet invariant mass in GeV; features: (n, D) per-event features (e.g. the
    representation of both jets); sqrt_s: collision energy in GeV (the store's provenance.ecm).
    The SR is the set of log-spaced bins whose edges are nearest to ``sr`` (GeV); the
    classifier's sidebands are ``sb_bins`` bins on each side; the fit uses every bin in
    ``mjj_range`` outside the SR. The sculpting guard regresses ln m_jj on the features of the
    events outside the SR (module docstring, step 0).
    """
    mjj, x, _ = _prepare(mjj, features, mjj_range)
    edges = log_bins(*mjj_range, n_bins)
    lo_bin = int(np.argmin(np.abs(edges - sr[0])))
    hi_bin = int(np.argmin(np.abs(edges - sr[1])))
    if hi_bin <= lo_bin or lo_bin - sb_bins < 0 or hi_bin + sb_bins > n_bins:
        raise ValueError(f"signal region {sr} GeV with {sb_bins} sideband bins does not fit in "
                         f"{n_bins} bins over {mjj_range} GeV")
    b = _bins(mjj, edges)
    outside_sr = (b < lo_bin) | (b >= hi_bin)
    x = _features_for(decorrelate, mjj, x, outside_sr)
    dep = check_mjj_dependence(mjj[outside_sr], x[outside_sr], max_corr=max_mjj_corr,
                               allow=allow_mjj_correlated, seed=seed)
    w = Window(lo_bin, hi_bin, sb_bins)
    sels, fs = window_selections(b, x, w, efficiencies, k=k, classifier=classifier, seed=seed)
    metrics: dict[str, float] = {}
    rows, hists = [], {}
    for eps in efficiencies:
        counts, fit, n_obs, z = _window_result(edges, b, sels[eps], w, sqrt_s)
        tag = eps_tag(eps)
        vals = {"z": z, "n_obs": n_obs, "n_bkg_fit": fit.n_bkg, "sigma_bkg": fit.sigma_bkg,
                "chi2_ndf": fit.chi2_ndf, "fit_ok": float(fit.ok)}
        for kname, v in vals.items():
            metrics[f"{prefix}_{kname}_eps_{tag}"] = float(v)
        rows.append({"eps": float(eps), **{kk: float(v) for kk, v in vals.items()},
                     "fit_problem": fit.problem})
        hists[eps] = (counts, fit)
    zs = [r["z"] for r in rows if np.isfinite(r["z"])]
    metrics[f"{prefix}_max_z"] = max(zs) if zs else float("nan")
    metrics[f"{prefix}_n_failed_fits"] = float(sum(not r["fit_ok"] for r in rows))
    metrics[f"{prefix}_val_logloss"] = fs.val_loss
    metrics[f"{prefix}_val_logloss_ref"] = fs.val_loss_ref
    metrics[f"{prefix}_mjj_corr"] = dep.corr
    metrics[f"{prefix}_sr_lo"], metrics[f"{prefix}_sr_hi"] = float(edges[lo_bin]), float(edges[hi_bin])
    figs = {f"{prefix}_mjj.png": _hunt_figure(edges, hists, (lo_bin, hi_bin), sqrt_s)} if figures else {}
    return EvalResult(metrics=metrics, figures=figs, tables={f"{prefix}_scan": rows})


def scan_windows(n_bins: int, sr_bins: int, sb_bins: int) -> list[Window]:
    """Every SR of ``sr_bins`` bins, slid by one bin, with full sidebands inside the range."""
    return [Window(lo, lo + sr_bins, sb_bins) for lo in range(sb_bins, n_bins - sr_bins - sb_bins + 1)]


@dataclass
class ScanResult:
    windows: list[Window]
    edges: np.ndarray
    efficiencies: tuple[float, ...]
    z: np.ndarray  # (n_windows, n_eps) local significance (nan: failed fit)
    flat_p: np.ndarray  # (n_windows, n_eps) background-only efficiency-flatness p-values
    rows: list[dict]  # one per window and efficiency
    counts: dict[tuple[int, float], np.ndarray]  # selected spectrum per (window index, eps)
    val_loss: float
    val_loss_ref: float  # the no-information log loss (SR share's entropy)
    max_z: float
    best: tuple[int, int]  # (window index, eps index) of max_z
    global_p: float
    global_z: float
    toys_max_z: np.ndarray  # smooth toys (refits only)
    full_toys_max_z: np.ndarray  # whole hunts on permuted m_jj (classifier included)
    significance: GlobalSignificance
    full_significance: GlobalSignificance | None
    mjj_corr: float
    mjj_corr_allowed: bool  # True: above max_mjj_corr, hunted on by request
    n_failed_fits: int

    @property
    def flatness_p(self) -> float:
        """Bonferroni-combined p-value of all (window, eps < 1) flatness tests."""
        p = self.flat_p[:, [i for i, e in enumerate(self.efficiencies) if e < 1]]
        return float(min(1.0, np.min(p) * p.size)) if p.size else 1.0


def _scan(b, mjj, x, windows, effs, edges, sqrt_s, *, k, classifier, seed, decorrelate):
    n_bins = len(edges) - 1
    z = np.full((len(windows), len(effs)), np.nan)
    flat = np.ones((len(windows), len(effs)))
    rows, counts, losses, refs = [], {}, [], []
    for wi, w in enumerate(windows):
        xw = _features_for(decorrelate, mjj, x, (b < w.lo) | (b >= w.hi))  # fitted outside SR
        sels, fs = window_selections(b, xw, w, effs, k=k, classifier=classifier,
                                     seed=seed + 1009 * wi)
        losses.append(fs.val_loss)
        refs.append(fs.val_loss_ref)
        for ei, eps in enumerate(effs):
            c, fit, n_obs, zz = _window_result(edges, b, sels[eps], w, sqrt_s)
            z[wi, ei], counts[wi, eps] = zz, c
            chi2, ndf, flat[wi, ei] = efficiency_flatness(b, sels[eps], fs.fold, n_bins)
            rows.append({"sr_lo": float(edges[w.lo]), "sr_hi": float(edges[w.hi]), "eps": eps,
                         "z": float(zz), "n_obs": n_obs, "n_bkg_fit": float(fit.n_bkg),
                         "sigma_bkg": float(fit.sigma_bkg), "chi2_ndf": float(fit.chi2_ndf),
                         "fit_ok": fit.ok, "flat_chi2_ndf": chi2 / max(ndf, 1),
                         "flat_p": float(flat[wi, ei])})
    return z, flat, rows, counts, float(np.mean(losses)), float(np.mean(refs))


def _nanmax(z: np.ndarray) -> float:
    return float(np.nanmax(z)) if np.isfinite(z).any() else float("nan")


def blind_scan(mjj: np.ndarray, features: np.ndarray, *, mjj_range: tuple[float, float],
               sqrt_s: float, n_bins: int = 16, sr_bins: int = 2, sb_bins: int = 2,
               efficiencies: Sequence[float] = SCAN_EFFICIENCIES, classifier: str = "mlp",
               k: int = 5, n_toys: int = 100, n_full_toys: int = 0, seed: int = 0,
               max_mjj_corr: float = MAX_MJJ_CORR, allow_mjj_correlated: bool = False,
               decorrelate: str = "none") -> ScanResult:
    """Slide the SR over the whole m_jj range; local Z per window and efficiency; global Z from
    background-only toys (module docstring). mjj: (n,) GeV; features: (n, D); sqrt_s: GeV.
    ``n_toys``: smooth toys (refits only); ``n_full_toys``: whole hunts on permuted m_jj."""
    mjj, x, _ = _prepare(mjj, features, mjj_range)
    edges = log_bins(*mjj_range, n_bins)
    b = _bins(mjj, edges)
    windows = scan_windows(n_bins, sr_bins, sb_bins)
    if not windows:
        raise ValueError(f"no signal region of {sr_bins} bins with {sb_bins} sideband bins each "
                         f"side fits in {n_bins} bins")
    # the guard sees what the classifiers will see: the features decorrelated over all events
    # (each window refits the decorrelation without its SR)
    dep = check_mjj_dependence(mjj, _features_for(decorrelate, mjj, x, np.ones(len(mjj), bool)),
                               max_corr=max_mjj_corr, allow=allow_mjj_correlated, seed=seed)
    effs = tuple(float(e) for e in efficiencies)
    z, flat, rows, counts, val_loss, val_ref = _scan(b, mjj, x, windows, effs, edges, sqrt_s,
                                                     k=k, classifier=classifier, seed=seed,
                                                     decorrelate=decorrelate)
    max_z = _nanmax(z)
    best = np.unravel_index(int(np.nanargmax(np.nan_to_num(z, nan=-np.inf))), z.shape)
    n_tests = z.size
    toys = lee_toys(counts, windows, effs, edges, sqrt_s, n_toys=n_toys, seed=seed)
    rng = np.random.default_rng([seed, 0xF011])
    perms = [rng.permutation(len(b)) for _ in range(n_full_toys)]
    full = np.array([_nanmax(_scan(b[pm], mjj[pm], x, windows, effs, edges, sqrt_s, k=k,
                                   classifier=classifier, seed=seed + 7919 * (t + 1),
                                   decorrelate=decorrelate)[0])
                     for t, pm in enumerate(perms)])
    sig = global_significance(max_z, toys, n_tests)
    full_sig = global_significance(max_z, full, n_tests) if n_full_toys else None
    return ScanResult(windows=windows, edges=edges, efficiencies=effs, z=z, flat_p=flat,
                      rows=rows, counts=counts, val_loss=val_loss, val_loss_ref=val_ref,
                      max_z=max_z, best=(int(best[0]), int(best[1])), global_p=sig.p,
                      global_z=sig.z, toys_max_z=toys, full_toys_max_z=full, significance=sig,
                      full_significance=full_sig, mjj_corr=dep.corr,
                      mjj_corr_allowed=bool(dep.corr > max_mjj_corr),
                      n_failed_fits=int(np.sum(~np.isfinite(z))))


def lee_toys(counts: dict[tuple[int, float], np.ndarray], windows: Sequence[Window],
             efficiencies: Sequence[float], edges: np.ndarray, sqrt_s: float, *,
             n_toys: int, seed: int = 0) -> np.ndarray:
    """(n_toys,) maximum local Z over all windows and efficiencies in background-only toys
    (nan where every fit of a toy failed).

    Poisson means per (window, eps): the background-only fit of the dijet function to all bins
    of that selected spectrum (its counts where the fit fails). eps = 1 selects every event, so
    its toy spectrum is shared by all windows; the others are drawn per window."""
    y_lo, y_hi = edges[:-1] / sqrt_s, edges[1:] / sqrt_s
    yc, dy = np.sqrt(y_lo * y_hi), y_hi - y_lo
    means, starts = {}, {}
    for key, c in counts.items():
        fit = fit_sidebands(edges, c, (0, 0), sqrt_s)
        means[key] = dijet_function(yc, *fit.params) * dy if fit.ok else c.astype(float)
        starts[key] = fit.params if fit.ok else None
    rng = np.random.default_rng([seed, 0x1EE])
    out = np.empty(n_toys)
    for t in range(n_toys):
        shared = {eps: rng.poisson(means[0, eps]) for eps in efficiencies if eps >= 1}
        best = float("nan")
        for wi, w in enumerate(windows):
            for eps in efficiencies:
                c = shared[eps] if eps >= 1 else rng.poisson(means[wi, eps])
                fit = fit_sidebands(edges, c, (w.lo, w.hi), sqrt_s, start=starts[wi, eps])
                zz = significance(float(c[w.lo:w.hi].sum()), fit.n_bkg, fit.sigma_bkg)
                best = np.nanmax([best, zz]) if np.isfinite(zz) else best
        out[t] = best
    return out


def mix_signal(mjj_bkg: np.ndarray, x_bkg: np.ndarray, mjj_sig: np.ndarray, x_sig: np.ndarray,
               fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All background events plus round(f / (1 - f) n_bkg) signal events drawn without
    replacement, so signal is a fraction f of all events: (mjj, x, is_signal), shuffled.
    f = 0 is the background-only control; an f > 0 that rounds to no event is refused."""
    n_sig = int(round(fraction / (1 - fraction) * len(mjj_bkg)))
    if fraction > 0 and n_sig == 0:
        raise ValueError(f"signal fraction {fraction} of {len(mjj_bkg)} background events is "
                         f"{fraction / (1 - fraction) * len(mjj_bkg):.2f} signal events: none")
    if n_sig > len(mjj_sig):
        raise ValueError(f"signal fraction {fraction} needs {n_sig} signal events; the pool has "
                         f"{len(mjj_sig)}")
    rng = np.random.default_rng([seed, 0x5167])
    pick = rng.choice(len(mjj_sig), n_sig, replace=False)
    mjj = np.r_[np.asarray(mjj_bkg, float), np.asarray(mjj_sig, float)[pick]]
    x = np.concatenate([np.asarray(x_bkg, float), np.asarray(x_sig, float)[pick]])
    truth = np.r_[np.zeros(len(mjj_bkg), bool), np.ones(n_sig, bool)]
    perm = rng.permutation(len(mjj))
    return mjj[perm], x[perm], truth[perm]


def hunt_mixture(mjj: np.ndarray, x: np.ndarray, truth: np.ndarray | None = None, *,
                 sqrt_s: float, mjj_range: tuple[float, float] | None = None,
                 prefix: str = "bumphunt", seed: int = 0, **scan_kw
                 ) -> tuple[dict[str, float], ScanResult]:
    """One blind scan of a data set and its metrics (``prefix``). The scan sees only (mjj, x);
    ``truth`` ((n,) bool, optional) gives the after-the-fact diagnostics ``_n_sig``, ``_n_bkg``
    and ``_signal_in_best_sr`` and nothing else. ``mjj_range`` defaults to the 1st-99th
    percentiles of the data's m_jj."""
    rng_ = mjj_range or tuple(float(v) for v in np.quantile(mjj, [0.01, 0.99]))
    res = blind_scan(mjj, x, mjj_range=rng_, sqrt_s=sqrt_s, seed=seed, **scan_kw)
    p = prefix
    w = res.windows[res.best[0]]
    lo, hi = float(res.edges[w.lo]), float(res.edges[w.hi])
    sig = res.significance
    metrics = {f"{p}_max_local_z": res.max_z, f"{p}_global_z": res.global_z,
               f"{p}_global_p": res.global_p, f"{p}_global_from_fit": float(sig.from_fit),
               f"{p}_global_p_empirical": sig.p_empirical, f"{p}_n_eff": sig.n_eff,
               f"{p}_toy_fit_ks_p": sig.ks_p, f"{p}_n_toys": float(sig.n_toys),
               f"{p}_best_sr_lo": lo, f"{p}_best_sr_hi": hi,
               f"{p}_best_eps": res.efficiencies[res.best[1]], f"{p}_val_logloss": res.val_loss,
               f"{p}_val_logloss_ref": res.val_loss_ref, f"{p}_mjj_corr": res.mjj_corr,
               f"{p}_n_failed_fits": float(res.n_failed_fits),
               f"{p}_flatness_p": res.flatness_p}
    if res.full_significance is not None:
        metrics[f"{p}_global_z_full_toys"] = res.full_significance.z
        metrics[f"{p}_n_full_toys"] = float(res.full_significance.n_toys)
    if truth is not None:  # diagnostics only: the window above was chosen without them
        truth = np.asarray(truth, bool)
        in_best = (mjj >= lo) & (mjj < hi)
        metrics[f"{p}_n_sig"] = float(truth.sum())
        metrics[f"{p}_n_bkg"] = float((~truth).sum())
        metrics[f"{p}_signal_in_best_sr"] = float(in_best[truth].mean()) if truth.any() else 0.0
    return metrics, res


def hunt_at_fractions(mjj: np.ndarray, features: np.ndarray, label: np.ndarray, *,
                      sqrt_s: float, fractions: Sequence[float] = SIGNAL_FRACTIONS,
                      mjj_range: tuple[float, float] | None = None, prefix: str = "bumphunt",
                      seed: int = 0, figures: bool = True, **scan_kw) -> EvalResult:
    """Blind scans at LHCO-like signal fractions: background (label 0) with signal (label >= 1)
    mixed in at each fraction of all events (f = 0: the background-only control). Without both
    classes the data are scanned as they are (prefix only). ``scan_kw`` go to
    :func:`blind_scan`; each scan is :func:`hunt_mixture` (labels never reach it)."""
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    lab = np.asarray(label).reshape(-1)
    bkg, sig = lab == 0, lab > 0
    runs = [(f, *mix_signal(mjj[bkg], x[bkg], mjj[sig], x[sig], f, seed=seed))
            for f in fractions] if sig.any() and bkg.any() else [(None, mjj, x, None)]
    metrics: dict[str, float] = {}
    rows, figs = [], {}
    for f, m, xx, truth in runs:
        p = prefix if f is None else f"{prefix}_f_{eps_tag(f)}"
        met, res = hunt_mixture(m, xx, truth, sqrt_s=sqrt_s, mjj_range=mjj_range, prefix=p,
                                seed=seed, **scan_kw)
        metrics.update(met)
        n_sig = float("nan") if truth is None else float(np.sum(truth))
        rows += [{"fraction": float("nan") if f is None else float(f), "n_sig": n_sig, **r}
                 for r in res.rows]
        if figures:
            figs[f"{p}_scan.png"] = _scan_figure(res)
    return EvalResult(metrics=metrics, figures=figs, tables={f"{prefix}_scan": rows})


def _scan_figure(res: ScanResult):
    from clrdist.eval.plots import new_figure

    fig, ax = new_figure()
    centres = [float(np.sqrt(res.edges[w.lo] * res.edges[w.hi])) for w in res.windows]
    for ei, eps in enumerate(res.efficiencies):
        ax.plot(centres, res.z[:, ei], "o-", ms=3, label=rf"$\epsilon$ = {eps:g}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(r"signal-region centre $m_{jj}$ [GeV]")
    ax.set_ylabel("local significance")
    ax.set_title(f"max local Z {res.max_z:.2f}, global Z {res.global_z:.2f}", fontsize="small")
    ax.legend(fontsize="small")
    return fig


def _hunt_figure(edges, hists, sr, sqrt_s):
    from clrdist.eval.plots import new_figure

    fig, ax = new_figure()
    centres = np.sqrt(edges[:-1] * edges[1:])
    yc = centres / sqrt_s
    dy = np.diff(edges) / sqrt_s
    for eps, (counts, fit) in hists.items():
        line = ax.errorbar(centres, counts, yerr=np.sqrt(counts), fmt="o", ms=3,
                           label=rf"$\epsilon$ = {eps:g}")
        if np.all(np.isfinite(fit.params)):
            ax.plot(centres, dijet_function(yc, *fit.params) * dy, "-",
                    color=line[0].get_color(), lw=1)
    ax.axvspan(edges[sr[0]], edges[sr[1]], color="grey", alpha=0.2, label="signal region")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$m_{jj}$ [GeV]")
    ax.set_ylabel("events / bin")
    ax.legend(fontsize="small")
    return fig
