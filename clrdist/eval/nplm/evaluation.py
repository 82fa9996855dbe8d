"""The NPLM evaluation (:func:`nplm_evaluation`, what ``clrdist eval --nplm`` runs): the pool
sizes, the null calibration, the signal toys, the metrics with their bootstrap errors
(:func:`median_error`), the toys' table and the t figure (:func:`t_figure`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from clrdist.eval.metrics import EvalResult, binary_labels
from clrdist.eval.nplm.calibration import KS_MIN, calibrate_null, z_chi2, z_empirical
from clrdist.eval.nplm.kernel import kernel_width
from clrdist.eval.nplm.toys import run_toys


def nplm_evaluation(rep: np.ndarray, label: np.ndarray, *, n_ref: int = 5000,
                    n_data: int = 1000, n_sig: float = 50.0, n_toys_null: int = 100,
                    n_toys_sig: int = 30, model: str = "kernel", prefix: str = "nplm",
                    seed: int = 0, device: str | None = None, figures: bool = True,
                    M: int = 200, ref_ratio: float = 5.0, n_toys_dof: int | None = None,
                    **model_kw) -> EvalResult:
    """Calibrate on reference-only toys and measure Z for signal-injected toys.

    Calibration on independent toys: the chi2's degrees of freedom are fitted on
    ``n_toys_dof`` reference-only toys (default ``n_toys_null``) and the KS test of the chi2
    runs on ``n_toys_null`` other ones (a fit checked on its own toys passes too easily); the
    empirical Z compares the signal toys with both sets.

    rep: (n, D) features of labelled samples (label 0 background pool, >= 1 signal pool,
    -1 dropped). Sizes are capped by the pools: the background pool must hold n_ref + ~n_data,
    and the reference stays at least ``ref_ratio`` times the data (a small pool shrinks both;
    the metrics record the sizes used): with a reference comparable to the data its own
    fluctuations widen the null t beyond the chi2 (raw Pythia jets at N_R / N_D = 1.9 gave
    KS p = 0.008 with 60 toys; at 5.2, 0.12).
    ``M`` (kernel centres; a toy costs ~N_R M^2, README's Performance table has the timings) and
    other ``model_kw`` go to the model (``nplm_t_kernel`` / ``nplm_t_network``).
    """
    if model == "kernel":
        model_kw["M"] = M
    keep, y = binary_labels(label)
    x = np.asarray(rep, dtype=np.float64)[keep]
    bkg, sig = x[y == 0], x[y == 1]
    def room(nd: int) -> int:  # reference events left beside Poisson(nd) data (+4 sigma)
        return int(len(bkg) - nd - 4 * np.sqrt(nd) - 1)

    if min(n_ref, room(n_data)) < ref_ratio * n_data:  # keep N_R / N_D: shrink the data
        n_data = max(1, min(n_data, int(n_ref / ref_ratio), int(len(bkg) / (ref_ratio + 1.2))))
    n_ref = min(n_ref, room(n_data))
    if n_ref < 10:
        raise ValueError(f"NPLM: background pool of {len(bkg)} too small for data {n_data}")
    if model == "kernel" and model_kw.get("sigma") is None:
        z = (bkg - bkg.mean(0)) / np.maximum(bkg.std(0), 1e-12)
        model_kw["sigma"] = kernel_width(torch.as_tensor(z[:n_ref]), seed=seed)
    kw = dict(n_ref=n_ref, n_data=n_data, model=model, device=device, **model_kw)
    converged: list[bool] = []
    n_toys_dof = n_toys_null if n_toys_dof is None else n_toys_dof
    cal = calibrate_null(bkg, n_toys_dof=n_toys_dof, n_toys_check=n_toys_null, seed_dof=seed + 2,
                         seed_check=seed, converged=converged, **kw)
    if cal.lam is not None:  # the kernel's signal toys use the calibration's penalty
        kw["lam"] = cal.lam
    t_dof, t0, dof, ks = cal.t_dof, cal.t_check, cal.dof, cal.ks_pvalue  # ks: toys the fit has not seen
    t1 = run_toys(bkg, sig, n_sig=n_sig, n_toys=n_toys_sig, seed=seed + 1, converged=converged,
                  **kw)
    n_unconverged = len(converged) - sum(converged)
    # the chi2 Z is quoted only when the null toys follow the fitted chi2 and every fit converged
    calibrated = ks > KS_MIN and n_unconverged == 0
    t_null = np.concatenate([t_dof, t0])
    ze = z_empirical(t1, t_null)
    p = prefix
    metrics = {
        f"{p}_dof": dof, f"{p}_ks_pvalue": float(ks), f"{p}_calibrated": float(calibrated),
        f"{p}_n_unconverged": float(n_unconverged),
        f"{p}_t_null_median": float(np.median(t_null)),
        f"{p}_t_sig_median": float(np.median(t1)),
        f"{p}_z_emp_median": float(np.median(ze)),
        f"{p}_z_emp_median_std": median_error(ze, seed),
        f"{p}_n_ref": float(n_ref), f"{p}_n_data": float(n_data), f"{p}_n_sig": float(n_sig),
        f"{p}_n_toys_null": float(n_toys_null), f"{p}_n_toys_sig": float(n_toys_sig),
        f"{p}_n_toys_dof": float(n_toys_dof),
    }
    if calibrated:
        zc = z_chi2(t1, dof)
        metrics[f"{p}_z_chi2_median"] = float(np.median(zc))
        metrics[f"{p}_z_chi2_median_std"] = median_error(zc, seed)
        metrics[f"{p}_z_chi2_at_median_t"] = float(z_chi2(np.median(t1), dof))
    if model == "kernel":
        metrics[f"{p}_M"], metrics[f"{p}_sigma"] = float(M), float(model_kw["sigma"])
        metrics[f"{p}_lam"] = float(cal.lam)
    tables = {f"{p}_toys": [{"kind": "null_dof", "t": float(v)} for v in t_dof]
              + [{"kind": "null", "t": float(v)} for v in t0]
              + [{"kind": "signal", "t": float(v)} for v in t1]}
    figs = {f"{p}_t.png": t_figure(t_null, t1, dof)} if figures else {}
    return EvalResult(metrics=metrics, figures=figs, tables=tables)


def median_error(z: np.ndarray, seed: int, n_boot: int = 200) -> float:
    """The statistical error of a median Z from its finite number of signal toys: the standard
    deviation of the median over ``n_boot`` bootstrap resamplings of the toys (0 for one toy)."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        return 0.0
    if np.isnan(z).any():
        return float("nan")
    z = np.clip(z, -40.0, 40.0)  # a chi2 Z beyond double precision (sf underflows to 0) is inf
    rng = np.random.default_rng(seed + 7919)
    return float(np.std(np.median(rng.choice(z, size=(n_boot, len(z))), axis=1)))


def t_figure(t_null: np.ndarray, t_sig: np.ndarray, dof: float):
    # lazy: matplotlib (~0.6 s) only when a figure is drawn
    from clrdist.eval.plots import new_figure

    fig, ax = new_figure()
    hi = max(np.max(t_null), np.max(t_sig) if len(t_sig) else 0) * 1.05
    bins = np.linspace(0, hi, 40)
    ax.hist(t_null, bins=bins, density=True, alpha=0.5, label=f"reference-only ({len(t_null)})")
    if len(t_sig):
        ax.hist(t_sig, bins=bins, density=True, alpha=0.5, label=f"signal-injected ({len(t_sig)})")
    xs = np.linspace(1e-3, hi, 400)
    ax.plot(xs, stats.chi2.pdf(xs, dof), "k-", lw=1.2, label=rf"$\chi^2$, dof = {dof:.1f}")
    ax.set_xlabel("NPLM test statistic $t$")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return fig
