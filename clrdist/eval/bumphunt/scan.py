"""The blind sliding-window scan, the one-window hunt, the look-elsewhere toys and the hunts at
LHCO-like signal fractions (:mod:`clrdist.eval.bumphunt`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clrdist.eval.bumphunt.fit import (
    GlobalSignificance,
    dijet_function,
    fit_sidebands,
    global_significance,
    log_bins,
    significance,
)
from clrdist.eval.bumphunt.guard import (
    MAX_MJJ_CORR,
    MjjDependence,
    _features_for,
    check_mjj_dependence,
    whiten_dijet_given_jet_pt,
)
from clrdist.eval.bumphunt.selection import Window, _bins, efficiency_flatness, window_selections
from clrdist.eval.metrics import EvalResult, eps_tag

EFFICIENCIES = (1.0, 0.1, 0.01, 0.002)
SCAN_EFFICIENCIES = (1.0, 0.1, 0.01)
SIGNAL_FRACTIONS = (0.0, 0.001, 0.003, 0.01)  # f = 0 (control), then LHCO-like signal shares


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
    def flatness_p_by_eps(self) -> dict[float, float]:
        """{eps < 1: Bonferroni-combined p of that efficiency's flatness tests over the windows}."""
        n = len(self.windows)
        return {eps: float(min(1.0, self.flat_p[:, i].min() * n))
                for i, eps in enumerate(self.efficiencies) if eps < 1}

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
               decorrelate: str = "none", guard: bool = True) -> ScanResult:
    """Slide the SR over the whole m_jj range; local Z per window and efficiency; global Z from
    background-only toys (module docstring). mjj: (n,) GeV; features: (n, D); sqrt_s: GeV.
    ``n_toys``: smooth toys (refits only); ``n_full_toys``: whole hunts on permuted m_jj.
    ``guard=False`` skips the m_jj regression (``mjj_corr`` nan, nothing refused): for studies
    of the selection itself, such as the flatness permutation test of bench.bumphunt, which
    repeat the scan on the same features many times."""
    mjj, x, _ = _prepare(mjj, features, mjj_range)
    edges = log_bins(*mjj_range, n_bins)
    b = _bins(mjj, edges)
    windows = scan_windows(n_bins, sr_bins, sb_bins)
    if not windows:
        raise ValueError(f"no signal region of {sr_bins} bins with {sb_bins} sideband bins each "
                         f"side fits in {n_bins} bins")
    # the guard sees what the classifiers will see: the features decorrelated over all events
    # (each window refits the decorrelation without its SR)
    dep = (check_mjj_dependence(mjj, _features_for(decorrelate, mjj, x, np.ones(len(mjj), bool)),
                                max_corr=max_mjj_corr, allow=allow_mjj_correlated, seed=seed)
           if guard else MjjDependence(corr=float("nan"), r2=float("nan"), n=0))
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
               fraction: float, *, seed: int = 0, jet_pt_bkg: np.ndarray | None = None,
               jet_pt_sig: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All background events plus round(f / (1 - f) n_bkg) signal events drawn without
    replacement, so signal is a fraction f of all events: (mjj, x, is_signal), shuffled.
    f = 0 is the background-only control; an f > 0 that rounds to no event is refused.

    With ``jet_pt_bkg`` / ``jet_pt_sig`` ((n, 2) GeV: ``x`` is two jets' features side by side),
    each event's jet pTs ride along through the mixing and the mixture's features come back
    whitened per jet against them (:func:`whiten_dijet_given_jet_pt`, fitted on this mixture)."""
    if jet_pt_bkg is not None:
        m, x, truth = mix_signal(mjj_bkg, np.c_[x_bkg, jet_pt_bkg], mjj_sig,
                                 np.c_[x_sig, jet_pt_sig], fraction, seed=seed)
        return m, whiten_dijet_given_jet_pt(x[:, :-2], x[:, -2], x[:, -1]), truth
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
                      seed: int = 0, figures: bool = True, jet_pt: np.ndarray | None = None,
                      **scan_kw) -> EvalResult:
    """Blind scans at LHCO-like signal fractions: background (label 0) with signal (label >= 1)
    mixed in at each fraction of all events (f = 0: the background-only control). Without both
    classes the data are scanned as they are (prefix only). ``scan_kw`` go to
    :func:`blind_scan`; each scan is :func:`hunt_mixture` (labels never reach it).

    ``jet_pt`` (n, 2) GeV: ``features`` are the two jets' features side by side (leading jet
    first), and each mixture's features are whitened per jet against that jet's pT
    (:func:`whiten_dijet_given_jet_pt`, fitted on that mixture alone) before it is hunted."""
    mjj = np.asarray(mjj, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    lab = np.asarray(label).reshape(-1)
    if jet_pt is not None:
        jet_pt = np.asarray(jet_pt, dtype=np.float64)
        if jet_pt.shape != (len(x), 2):
            raise ValueError(f"jet_pt must be (n, 2) for {len(x)} events; got {jet_pt.shape}")
    bkg, sig = lab == 0, lab > 0
    if sig.any() and bkg.any():
        pts = (None, None) if jet_pt is None else (jet_pt[bkg], jet_pt[sig])
        runs = [(f, *mix_signal(mjj[bkg], x[bkg], mjj[sig], x[sig], f, seed=seed,
                                jet_pt_bkg=pts[0], jet_pt_sig=pts[1])) for f in fractions]
    else:  # scanned as they are
        if jet_pt is not None:
            x = whiten_dijet_given_jet_pt(x, jet_pt[:, 0], jet_pt[:, 1])
        runs = [(None, mjj, x, None)]
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
    # lazy: matplotlib (~0.6 s) only when a figure is drawn
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
    # lazy: matplotlib (~0.6 s) only when a figure is drawn
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
