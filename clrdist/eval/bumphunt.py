"""CWoLa hunting (Collins, Howe, Nachman, arXiv:1805.02664 / 1902.02634) on dijet samples, blind.

The signal region is never taken from the truth labels. :func:`blind_scan` slides a window over
the whole m_jj spectrum and, per window:

1. Bins: log-spaced m_jj bins; the signal region (SR) is ``sr_bins`` bins, the classifier's
   sidebands (SB) the ``sb_bins`` bins on each side.
2. A classifier learns SR (class 1) vs SB (class 0) from the event features (the
   representation). Every event in the m_jj range (SR, SB and the bins outside) is dealt to one
   of k = 5 folds. For each fold, the other folds' SR/SB events train k - 1 models (each other
   fold once the validation fold); their average scores *every* event of the fold.
3. Selection-efficiency scan: for each eps in ``efficiencies``, an event passes when its score
   is above the threshold that keeps a fraction eps of its own fold's sideband events. One model
   family and one threshold definition for every event, inside and outside SR u SB, so the
   background-only efficiency is flat in m_jj (no step at the sideband edges; tested).
4. Fit f(y) = p1 (1-y)^p2 y^-p3, y = m_jj / sqrt(s), to the selected counts of all bins outside
   the SR (scipy curve_fit, Pearson chi2 weights), predict the SR background with its uncertainty
   from the fit covariance. sqrt(s) comes from the store (``provenance.ecm``), not a constant.
5. Local significance of the SR count vs the prediction (Cowan's formula for a Poisson count with
   a Gaussian background uncertainty), signed.

Global significance: the largest local Z over all windows and efficiencies, against the same
maximum in background-only toys (look-elsewhere effect): per window and efficiency the selected
spectrum's background-only fit (all bins) gives Poisson means; each toy redraws the spectra
(eps = 1 shares one spectrum across windows, as the data do; other efficiencies are drawn
independently per window, which overstates the trials factor: conservative), repeats steps 4-5
in every window and keeps its maximum Z. p_global = (k + 1) / (n + 1), k of n toys at or above
the observed maximum.

:func:`hunt_at_fractions` runs the scan at LHCO-like signal fractions (0.1%, 0.3%, 1% of all
events) made by mixing signal events into the background (``mix_signal``), never on the ~50%
signal of a labelled store. Metric names, per fraction f (tag as in ``eps_tag``):
``bumphunt_f_0.01_max_local_z``, ``_global_z``, ``_global_p``, ``_best_sr_lo``, ``_best_sr_hi``,
``_best_eps``, ``_n_sig``, ``_n_bkg``, ``_val_logloss``, and the after-the-fact diagnostic
``_signal_in_best_sr`` (the injected signal's share inside the chosen SR); table
``bumphunt_scan`` (every window, efficiency and fraction); figures ``bumphunt_f_<f>_scan.png``.
:func:`cwola_hunt` is the same analysis in one given signal region (``bumphunt_z_eps_0.01``, ...).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from sklearn.metrics import log_loss

from clrdist.eval.metrics import EvalResult, eps_tag

EFFICIENCIES = (1.0, 0.1, 0.01, 0.002)
SCAN_EFFICIENCIES = (1.0, 0.1, 0.01)
SIGNAL_FRACTIONS = (0.001, 0.003, 0.01)  # LHCO-like: signal share of all events


def dijet_function(y: np.ndarray, log_p1: float, p2: float, p3: float) -> np.ndarray:
    """f(y) = p1 (1-y)^p2 y^-p3 with p1 = exp(log_p1) (keeps the fit well scaled)."""
    return np.exp(log_p1 + p2 * np.log1p(-y) - p3 * np.log(y))


def log_bins(lo: float, hi: float, n: int) -> np.ndarray:
    return np.geomspace(lo, hi, n + 1)


@dataclass
class SidebandFit:
    n_bkg: float  # predicted SR background
    sigma_bkg: float  # its uncertainty from the fit covariance
    params: np.ndarray
    chi2_ndf: float


def fit_sidebands(edges: np.ndarray, counts: np.ndarray, sr: tuple[int, int], sqrt_s: float,
                  start: np.ndarray | None = None) -> SidebandFit:
    """Fit the dijet function to the bin counts outside bins [sr[0], sr[1]) and predict the SR.

    Counts are modelled as f(y_c) * dy per bin (y_c the bin's geometric centre). Two passes:
    Neyman weights sqrt(n + 1), then Pearson weights sqrt(prediction). ``start``: initial
    parameters (the toys start from the fit they were drawn from)."""
    y_lo, y_hi = edges[:-1] / sqrt_s, edges[1:] / sqrt_s
    yc, dy = np.sqrt(y_lo * y_hi), y_hi - y_lo
    out = np.ones(len(counts), bool)
    out[sr[0]:sr[1]] = False
    x, n = yc[out], counts[out].astype(float)

    def model(xx, a, b, c):
        return dijet_function(xx, a, b, c) * np.interp(xx, yc, dy)

    # start: a power law through the first and last populated bins, p2 = 0
    pos = n > 0
    if pos.sum() < 4:
        return SidebandFit(float(counts[sr[0]:sr[1]].sum()), float("inf"), np.full(3, np.nan),
                           float("nan"))
    xp, npos = x[pos], n[pos]
    p3 = -np.log(npos[-1] / npos[0]) / np.log(xp[-1] / xp[0]) + 1.0
    p0 = [np.log(npos[0] / np.interp(xp[0], yc, dy)) + p3 * np.log(xp[0]), 0.0, p3]
    if start is not None and np.all(np.isfinite(start)):
        p0 = list(start)
    sigma = np.sqrt(n + 1.0)
    params, cov = p0, None
    try:
        with warnings.catch_warnings():  # sparse toys: a singular covariance -> sigma_B = inf
            warnings.simplefilter("ignore", OptimizeWarning)
            for _ in range(2):
                params, cov = curve_fit(model, x, n, p0=params, sigma=sigma, absolute_sigma=True,
                                        maxfev=20000)
                sigma = np.sqrt(np.maximum(model(x, *params), 1.0))
    except (RuntimeError, ValueError):  # no convergence: no prediction (Z = 0)
        return SidebandFit(float(counts[sr[0]:sr[1]].sum()), float("inf"), np.full(3, np.nan),
                           float("nan"))
    resid = (n - model(x, *params)) / sigma
    chi2_ndf = float(resid @ resid / max(len(n) - 3, 1))
    sr_x = yc[sr[0]:sr[1]]

    def predict(p):
        return float(model(sr_x, *p).sum())

    b = predict(params)
    jac = np.array([(predict(params + h) - predict(params - h)) / (2 * 1e-6)
                    for h in np.eye(3) * 1e-6])
    var = float(jac @ cov @ jac) if np.all(np.isfinite(cov)) else float("inf")
    return SidebandFit(b, float(np.sqrt(max(var, 0.0))), np.asarray(params), chi2_ndf)


def significance(n: float, b: float, sigma_b: float) -> float:
    """Signed local significance of n observed for b +- sigma_b expected (Cowan's profile
    likelihood formula for a Poisson count with a Gaussian-constrained background)."""
    if b <= 0 or not np.isfinite(sigma_b):
        return 0.0
    if sigma_b <= 1e-9 * b:
        z2 = 2 * ((n * np.log(n / b) if n > 0 else 0.0) - (n - b))
    else:
        s2 = sigma_b**2
        t1 = n * np.log(n * (b + s2) / (b * b + n * s2)) if n > 0 else 0.0
        t2 = (b * b / s2) * np.log1p(s2 * (n - b) / (b * (b + s2)))
        z2 = 2 * (t1 - t2)
    return float(np.sign(n - b) * np.sqrt(max(z2, 0.0)))


def _make_classifier(kind: str, seed: int):
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
    raise KeyError(f"unknown classifier {kind!r}; known: ['linear', 'mlp']")


def fold_scores(x: np.ndarray, target: np.ndarray, train: np.ndarray, *, k: int = 5,
                classifier: str = "mlp", seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores (n,) of every event from the models of its own fold, the fold (n,) of each event
    and the mean validation log loss.

    x: (n, D) features of all events; target: (n,) SR = 1 / SB = 0 (ignored outside ``train``);
    train: (n,) bool, the SR u SB events the classifiers learn from. For each test fold, every
    other fold serves once as validation fold (its SR-vs-SB log loss is the diagnostic: ln 2 =
    0.693 means nothing learnt) while the remaining k - 2 are trained on; the k - 1 models'
    average scores all events of the test fold, inside and outside SR u SB alike (none of those
    models saw them)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % k
    score = np.zeros(len(x))
    losses: list[float] = []
    for test in range(k):
        in_test = fold == test
        preds = []
        for val in range(k):
            if val == test:
                continue
            tr = train & (fold != test) & (fold != val)
            va = train & (fold == val)
            clf = _make_classifier(classifier, seed + 31 * test + val)
            clf.fit(x[tr], target[tr])  # (the MLP's early stopping splits the training folds)
            losses.append(log_loss(target[va], clf.predict_proba(x[va])[:, 1], labels=[0, 1]))
            preds.append(clf.predict_proba(x[in_test])[:, 1])
        score[in_test] = np.mean(preds, axis=0)
    return score, fold, float(np.mean(losses))


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
                      ) -> tuple[dict[float, np.ndarray], float]:
    """{eps: (n,) bool selection} of every event (bin index ``b``) for window ``w``, and the
    classifier's mean validation log loss."""
    in_sr = (b >= w.lo) & (b < w.hi)
    in_sb = ((b >= w.lo - w.sb) & (b < w.lo)) | ((b >= w.hi) & (b < w.hi + w.sb))
    score, fold, val_loss = fold_scores(x, in_sr.astype(int), in_sr | in_sb, k=k,
                                        classifier=classifier, seed=seed)
    return {eps: select(score, fold, in_sb, eps) for eps in efficiencies}, val_loss


def _window_result(edges, b, sel, w: Window, sqrt_s):
    counts = np.bincount(b[sel], minlength=len(edges) - 1)
    fit = fit_sidebands(edges, counts, (w.lo, w.hi), sqrt_s)
    n_obs = float(counts[w.lo:w.hi].sum())
    return counts, fit, n_obs, significance(n_obs, fit.n_bkg, fit.sigma_bkg)


def cwola_hunt(mjj: np.ndarray, features: np.ndarray, *, sr: tuple[float, float],
               mjj_range: tuple[float, float], n_bins: int = 20, sb_bins: int = 2,
               sqrt_s: float, efficiencies: Sequence[float] = EFFICIENCIES,
               classifier: str = "mlp", k: int = 5, seed: int = 0, prefix: str = "bumphunt",
               figures: bool = True) -> EvalResult:
    """CWoLa bump hunt in one given signal region (for a blind search use :func:`blind_scan`).

    mjj: (n,) dijet invariant mass in GeV; features: (n, D) per-event features (e.g. the
    representation of both jets); sqrt_s: collision energy in GeV (the store's provenance.ecm).
    The SR is the set of log-spaced bins whose edges are nearest to ``sr`` (GeV); the
    classifier's sidebands are ``sb_bins`` bins on each side; the fit uses every bin in
    ``mjj_range`` outside the SR.
    """
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    inside = (mjj >= mjj_range[0]) & (mjj < mjj_range[1])
    mjj, x = mjj[inside], x[inside]
    edges = log_bins(*mjj_range, n_bins)
    lo_bin = int(np.argmin(np.abs(edges - sr[0])))
    hi_bin = int(np.argmin(np.abs(edges - sr[1])))
    if hi_bin <= lo_bin or lo_bin - sb_bins < 0 or hi_bin + sb_bins > n_bins:
        raise ValueError(f"signal region {sr} GeV with {sb_bins} sideband bins does not fit in "
                         f"{n_bins} bins over {mjj_range} GeV")
    b = _bins(mjj, edges)
    w = Window(lo_bin, hi_bin, sb_bins)
    sels, val_loss = window_selections(b, x, w, efficiencies, k=k, classifier=classifier,
                                       seed=seed)
    metrics: dict[str, float] = {}
    rows, hists = [], {}
    for eps in efficiencies:
        counts, fit, n_obs, z = _window_result(edges, b, sels[eps], w, sqrt_s)
        tag = eps_tag(eps)
        vals = {"z": z, "n_obs": n_obs, "n_bkg_fit": fit.n_bkg, "sigma_bkg": fit.sigma_bkg,
                "chi2_ndf": fit.chi2_ndf}
        for kname, v in vals.items():
            metrics[f"{prefix}_{kname}_eps_{tag}"] = float(v)
        rows.append({"eps": float(eps), **{kk: float(v) for kk, v in vals.items()}})
        hists[eps] = (counts, fit)
    metrics[f"{prefix}_max_z"] = max(r["z"] for r in rows)
    metrics[f"{prefix}_val_logloss"] = val_loss
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
    z: np.ndarray  # (n_windows, n_eps) local significance
    rows: list[dict]  # one per window and efficiency
    counts: dict[tuple[int, float], np.ndarray]  # selected spectrum per (window index, eps)
    val_loss: float
    max_z: float
    best: tuple[int, int]  # (window index, eps index) of max_z
    global_p: float
    global_z: float
    toys_max_z: np.ndarray


def blind_scan(mjj: np.ndarray, features: np.ndarray, *, mjj_range: tuple[float, float],
               sqrt_s: float, n_bins: int = 16, sr_bins: int = 2, sb_bins: int = 2,
               efficiencies: Sequence[float] = SCAN_EFFICIENCIES, classifier: str = "mlp",
               k: int = 5, n_toys: int = 100, seed: int = 0) -> ScanResult:
    """Slide the SR over the whole m_jj range; local Z per window and efficiency; global Z from
    background-only toys (module docstring). mjj: (n,) GeV; features: (n, D); sqrt_s: GeV."""
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    inside = (mjj >= mjj_range[0]) & (mjj < mjj_range[1])
    mjj, x = mjj[inside], x[inside]
    edges = log_bins(*mjj_range, n_bins)
    b = _bins(mjj, edges)
    windows = scan_windows(n_bins, sr_bins, sb_bins)
    if not windows:
        raise ValueError(f"no signal region of {sr_bins} bins with {sb_bins} sideband bins each "
                         f"side fits in {n_bins} bins")
    effs = tuple(float(e) for e in efficiencies)
    z = np.zeros((len(windows), len(effs)))
    rows, counts, losses = [], {}, []
    for wi, w in enumerate(windows):
        sels, val_loss = window_selections(b, x, w, effs, k=k, classifier=classifier,
                                           seed=seed + 1009 * wi)
        losses.append(val_loss)
        for ei, eps in enumerate(effs):
            c, fit, n_obs, zz = _window_result(edges, b, sels[eps], w, sqrt_s)
            z[wi, ei], counts[wi, eps] = zz, c
            rows.append({"sr_lo": float(edges[w.lo]), "sr_hi": float(edges[w.hi]), "eps": eps,
                         "z": float(zz), "n_obs": n_obs, "n_bkg_fit": float(fit.n_bkg),
                         "sigma_bkg": float(fit.sigma_bkg)})
    best = np.unravel_index(int(np.argmax(z)), z.shape)
    max_z = float(z[best])
    toys = lee_toys(counts, windows, effs, edges, sqrt_s, n_toys=n_toys, seed=seed)
    p = (int((toys >= max_z).sum()) + 1) / (len(toys) + 1)
    return ScanResult(windows=windows, edges=edges, efficiencies=effs, z=z, rows=rows,
                      counts=counts, val_loss=float(np.mean(losses)), max_z=max_z,
                      best=(int(best[0]), int(best[1])), global_p=float(p),
                      global_z=float(stats.norm.isf(p)), toys_max_z=toys)


def lee_toys(counts: dict[tuple[int, float], np.ndarray], windows: Sequence[Window],
             efficiencies: Sequence[float], edges: np.ndarray, sqrt_s: float, *,
             n_toys: int, seed: int = 0) -> np.ndarray:
    """(n_toys,) maximum local Z over all windows and efficiencies in background-only toys.

    Poisson means per (window, eps): the background-only fit of the dijet function to all bins
    of that selected spectrum (its counts where the fit fails). eps = 1 selects every event, so
    its toy spectrum is shared by all windows; the others are drawn per window."""
    y_lo, y_hi = edges[:-1] / sqrt_s, edges[1:] / sqrt_s
    yc, dy = np.sqrt(y_lo * y_hi), y_hi - y_lo
    means, starts = {}, {}
    for key, c in counts.items():
        fit = fit_sidebands(edges, c, (0, 0), sqrt_s)
        ok = np.all(np.isfinite(fit.params))
        means[key] = dijet_function(yc, *fit.params) * dy if ok else c.astype(float)
        starts[key] = fit.params if ok else None
    rng = np.random.default_rng([seed, 0x1EE])
    out = np.empty(n_toys)
    for t in range(n_toys):
        shared = {eps: rng.poisson(means[0, eps]) for eps in efficiencies if eps >= 1}
        best = -np.inf
        for wi, w in enumerate(windows):
            for eps in efficiencies:
                c = shared[eps] if eps >= 1 else rng.poisson(means[wi, eps])
                fit = fit_sidebands(edges, c, (w.lo, w.hi), sqrt_s, start=starts[wi, eps])
                best = max(best, significance(float(c[w.lo:w.hi].sum()), fit.n_bkg,
                                              fit.sigma_bkg))
        out[t] = best
    return out


def mix_signal(mjj_bkg: np.ndarray, x_bkg: np.ndarray, mjj_sig: np.ndarray, x_sig: np.ndarray,
               fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All background events plus round(f / (1 - f) n_bkg) signal events drawn without
    replacement, so signal is a fraction f of all events: (mjj, x, is_signal), shuffled."""
    n_sig = int(round(fraction / (1 - fraction) * len(mjj_bkg)))
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


def hunt_at_fractions(mjj: np.ndarray, features: np.ndarray, label: np.ndarray, *,
                      sqrt_s: float, fractions: Sequence[float] = SIGNAL_FRACTIONS,
                      mjj_range: tuple[float, float] | None = None, prefix: str = "bumphunt",
                      seed: int = 0, figures: bool = True, **scan_kw) -> EvalResult:
    """Blind scans at LHCO-like signal fractions: background (label 0) with signal (label >= 1)
    mixed in at each fraction of all events. Without signal labels the data are scanned as
    they are (prefix only). ``mjj_range`` defaults to the 1st-99th percentiles of the mixture's
    m_jj (no labels involved); ``scan_kw`` go to :func:`blind_scan`."""
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    lab = np.asarray(label).reshape(-1)
    bkg, sig = lab == 0, lab > 0
    runs = [(f, *mix_signal(mjj[bkg], x[bkg], mjj[sig], x[sig], f, seed=seed))
            for f in fractions] if sig.any() and bkg.any() else [(None, mjj, x, None)]
    metrics: dict[str, float] = {}
    rows, figs = [], {}
    for f, m, xx, truth in runs:
        rng_ = mjj_range or tuple(float(v) for v in np.quantile(m, [0.01, 0.99]))
        res = blind_scan(m, xx, mjj_range=rng_, sqrt_s=sqrt_s, seed=seed, **scan_kw)
        p = prefix if f is None else f"{prefix}_f_{eps_tag(f)}"
        w = res.windows[res.best[0]]
        lo, hi = float(res.edges[w.lo]), float(res.edges[w.hi])
        metrics.update({f"{p}_max_local_z": res.max_z, f"{p}_global_z": res.global_z,
                        f"{p}_global_p": res.global_p, f"{p}_best_sr_lo": lo,
                        f"{p}_best_sr_hi": hi, f"{p}_best_eps": res.efficiencies[res.best[1]],
                        f"{p}_val_logloss": res.val_loss, f"{p}_n_toys": float(len(res.toys_max_z))})
        if truth is not None:  # diagnostics only: the window above was chosen without them
            in_best = (m >= lo) & (m < hi)
            metrics[f"{p}_n_sig"] = float(truth.sum())
            metrics[f"{p}_n_bkg"] = float((~truth).sum())
            metrics[f"{p}_signal_in_best_sr"] = float(in_best[truth].mean()) if truth.any() else 0.0
        rows += [{"fraction": float("nan") if f is None else float(f), **r} for r in res.rows]
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
