"""CWoLa hunting (Collins, Howe, Nachman, arXiv:1805.02664 / 1902.02634) on dijet samples.

Procedure:
1. Bin m_jj in log-spaced bins; the signal region (SR) is a window of bins, the classifier's
   sidebands (SB) the ``sb_bins`` bins on each side.
2. A classifier learns SR (class 1) vs SB (class 0) from sample features (the representation).
   Nested k-fold (5 folds): for each test fold, each of the other folds in turn is the
   validation fold and the rest is trained on; the k-1 models are averaged and score the test
   fold, so every SR/SB event gets an out-of-fold score. Events outside SR u SB are scored by the
   average of all models (none was trained on them).
3. Selection-efficiency scan: for each eps in (1, 0.1, 0.01, 0.002) keep the events whose score
   passes the threshold that keeps a fraction eps of the sideband events of the same test fold
   (bins outside SR u SB: a fraction eps of themselves). Thresholds are per fold because each
   fold's models have their own output scale and intercept: one global threshold on pooled
   out-of-fold scores sculpts a deficit into the SR when nothing is there to find.
4. Fit f(y) = p1 (1-y)^p2 y^-p3, y = m_jj / sqrt(s), to the selected counts of all bins outside
   the SR (scipy curve_fit, Pearson chi2 weights), predict the SR background B with its
   uncertainty from the fit covariance.
5. Local significance of the observed SR count N vs B +- sigma_B (Poisson with a Gaussian
   background uncertainty, Cowan's formula), signed: negative for deficits.

Metric names (eps tag as in ``eps_tag``): ``bumphunt_z_eps_0.01``, ``bumphunt_n_obs_eps_0.01``,
``bumphunt_n_bkg_fit_eps_0.01``, ``bumphunt_sigma_bkg_eps_0.01``, ``bumphunt_chi2_ndf_eps_0.01``,
``bumphunt_max_z``, ``bumphunt_val_logloss``, ``bumphunt_sr_lo``, ``bumphunt_sr_hi``; figure ``bumphunt_mjj.png``; table ``bumphunt_scan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from sklearn.metrics import log_loss

from clrdist.eval.metrics import EvalResult, eps_tag

EFFICIENCIES = (1.0, 0.1, 0.01, 0.002)


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


def fit_sidebands(edges: np.ndarray, counts: np.ndarray, sr: tuple[int, int], sqrt_s: float
                  ) -> SidebandFit:
    """Fit the dijet function to the bin counts outside bins [sr[0], sr[1]) and predict the SR.

    Counts are modelled as f(y_c) * dy per bin (y_c the bin's geometric centre). Two passes:
    Neyman weights sqrt(n + 1), then Pearson weights sqrt(prediction)."""
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
    sigma = np.sqrt(n + 1.0)
    params, cov = p0, None
    for _ in range(2):
        params, cov = curve_fit(model, x, n, p0=params, sigma=sigma, absolute_sigma=True,
                                maxfev=20000)
        sigma = np.sqrt(np.maximum(model(x, *params), 1.0))
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
    if b <= 0:
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


def nested_kfold_scores(x: np.ndarray, target: np.ndarray, x_other: np.ndarray, *,
                        k: int = 5, classifier: str = "mlp", seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Out-of-fold scores (len(x),) from nested k-fold training, scores (len(x_other),) from
    the average of every trained model, the mean validation log loss and the fold of each
    sample. For each test fold,
    every other fold serves once as validation fold (held out of training; its SR-vs-SB log
    loss is the diagnostic: ln 2 = 0.693 means nothing learnt) while the remaining k-2 are
    trained on; the k-1 models' outputs are averaged."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % k
    oof = np.zeros(len(x))
    other = np.zeros(len(x_other))
    n_models = 0
    losses: list[float] = []
    for test in range(k):
        preds = []
        for val in range(k):
            if val == test:
                continue
            tr = (fold != test) & (fold != val)
            clf = _make_classifier(classifier, seed + 31 * test + val)
            clf.fit(x[tr], target[tr])  # (the MLP's early stopping splits the training folds)
            losses.append(log_loss(target[fold == val], clf.predict_proba(x[fold == val])[:, 1],
                                   labels=[0, 1]))
            preds.append(clf.predict_proba(x[fold == test])[:, 1])
            if len(x_other):
                other += clf.predict_proba(x_other)[:, 1]
            n_models += 1
        oof[fold == test] = np.mean(preds, axis=0)
    return oof, other / max(n_models, 1), float(np.mean(losses)), fold


def cwola_hunt(mjj: np.ndarray, features: np.ndarray, *, sr: tuple[float, float],
               mjj_range: tuple[float, float], n_bins: int = 20, sb_bins: int = 2,
               sqrt_s: float = 13000.0, efficiencies: Sequence[float] = EFFICIENCIES,
               classifier: str = "mlp", k: int = 5, seed: int = 0, prefix: str = "bumphunt",
               figures: bool = True) -> EvalResult:
    """CWoLa bump hunt in one signal region.

    mjj: (n,) dijet invariant mass in GeV; features: (n, D) per-event features (e.g. the
    representation of both jets). The SR is the set of log-spaced bins whose edges are nearest
    to ``sr`` (GeV); the classifier's sidebands are ``sb_bins`` bins on each side; the fit uses
    every bin in ``mjj_range`` outside the SR.
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
    b = np.clip(np.searchsorted(edges, mjj, side="right") - 1, 0, n_bins - 1)
    in_sr = (b >= lo_bin) & (b < hi_bin)
    in_sb = ((b >= lo_bin - sb_bins) & (b < lo_bin)) | ((b >= hi_bin) & (b < hi_bin + sb_bins))
    train = in_sr | in_sb
    oof, other, val_loss, fold = nested_kfold_scores(
        x[train], in_sr[train].astype(int), x[~train], k=k, classifier=classifier, seed=seed)
    # group of each event for the selection: its test fold (SR/SB events), or k (other bins)
    group = np.full(len(mjj), k)
    group[train] = fold
    score = np.empty(len(mjj))
    score[train], score[~train] = oof, other
    metrics: dict[str, float] = {}
    rows, hists = [], {}
    for eps in efficiencies:
        sel = np.ones(len(score), bool)
        if eps < 1:
            # Thresholds per group: a test fold's threshold keeps eps of *its own* sideband
            # events (each fold has its own models, whose output scale and intercept differ);
            # the other bins, scored by the average of all models, keep eps of themselves.
            for g in range(k + 1):
                in_g = group == g
                ref = in_g & (in_sb if g < k else True)
                if ref.any():
                    sel[in_g] = score[in_g] > np.quantile(score[ref], 1 - eps)
        counts = np.bincount(b[sel], minlength=n_bins)
        fit = fit_sidebands(edges, counts, (lo_bin, hi_bin), sqrt_s)
        n_obs = float(counts[lo_bin:hi_bin].sum())
        z = significance(n_obs, fit.n_bkg, fit.sigma_bkg)
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


def _hunt_figure(edges, hists, sr, sqrt_s):
    from clrdist.eval.plots import _figure

    fig, ax = _figure()
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
