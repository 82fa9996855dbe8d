"""NPLM's null calibration and its Z: the kernel penalty (:func:`choose_lambda`), the chi2's
degrees of freedom fitted on reference-only toys and checked (KS) on independent ones
(:func:`calibrate_null`), and t -> Z, from the fitted chi2 or from the null toys
(:func:`z_chi2`, :func:`z_empirical`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from clrdist.eval.nplm.toys import run_toys

KS_MIN = 0.01  # null toys vs the fitted chi2: below this KS p-value the chi2 Z is not quoted
LAM_GRID = (1e-6, 1e-5, 1e-4, 1e-3)  # kernel penalties choose_lambda tries, smallest first
LAM_KS = 0.1  # ... taking the first whose fitting toys follow their own fitted chi2 this well
LAM_VAR = 2.0  # ... and whose t varies at most this many times a chi2's 2 dof (KS misses tails)


def fit_dof(t_null: np.ndarray) -> float:
    """Degrees of freedom of a chi2 (loc 0, scale 1) fitted to null t values by ML."""
    t = np.asarray(t_null, dtype=np.float64)
    t = np.clip(t, 1e-9, None)  # the chi2 density needs t > 0; tiny negative t from round-off
    dof, _, _ = stats.chi2.fit(t, np.mean(t), floc=0, fscale=1)
    return float(dof)


def choose_lambda(background, *, n_toys: int, seed: int, grid: tuple[float, ...] = LAM_GRID,
                  converged: list[bool] | None = None, **kw) -> tuple[float, np.ndarray, dict]:
    """The kernel penalty: the smallest lam of ``grid`` whose ``n_toys`` reference-only toys
    follow the chi2 fitted to them (KS p >= ``LAM_KS`` and var t <= ``LAM_VAR`` x 2 dof: a
    chi2's variance is twice its dof, a tail of isolated spikes inflates it), else the largest.
    Returns (lam, its toys' t, {lam tried: (KS p, var t / 2 dof)}); the toys are the
    dof-fitting set, so the chi2 is then checked on other toys. ``converged`` receives the
    chosen toys' flags; ``kw`` go to :func:`run_toys`."""
    tried: dict[float, tuple[float, float]] = {}
    for lam in grid:
        flags: list[bool] = []
        t = run_toys(background, None, n_toys=n_toys, seed=seed, converged=flags, lam=lam, **kw)
        dof = fit_dof(t)
        ks, spread = float(stats.kstest(t, stats.chi2(dof).cdf).pvalue), float(t.var() / (2 * dof))
        tried[lam] = (ks, spread)
        if (ks >= LAM_KS and spread <= LAM_VAR) or lam == grid[-1]:
            break
    if converged is not None:
        converged.extend(flags)
    return lam, t, tried


@dataclass
class NullCalibration:
    """Reference-only toys in two independent sets: the chi2 fitted to one, checked on the other."""
    lam: float | None  # the kernel penalty used (None: network model)
    lam_tried: dict[float, tuple[float, float]]  # choose_lambda's {lam: (KS p, var t / 2 dof)}
    t_dof: np.ndarray  # the toys the dof is fitted on
    t_check: np.ndarray  # the independent toys the KS test runs on
    dof: float
    ks_pvalue: float


def calibrate_null(background, *, n_toys_dof: int, n_toys_check: int, seed_dof: int,
                   seed_check: int, converged: list[bool] | None = None,
                   **kw) -> NullCalibration:
    """The null calibration of NPLM: for the kernel model without a given ``lam`` the penalty
    from :func:`choose_lambda` (on the dof-fitting toys), the chi2's dof fitted on ``n_toys_dof``
    toys and its KS p-value on ``n_toys_check`` other ones. ``kw`` go to :func:`run_toys`."""
    tried: dict[float, tuple[float, float]] = {}
    if kw.get("model", "kernel") == "kernel" and kw.get("lam") is None:
        kw.pop("lam", None)
        kw["lam"], t_dof, tried = choose_lambda(background, n_toys=n_toys_dof, seed=seed_dof,
                                                converged=converged, **kw)
    else:
        t_dof = run_toys(background, None, n_toys=n_toys_dof, seed=seed_dof, converged=converged,
                         **kw)
    t_check = run_toys(background, None, n_toys=n_toys_check, seed=seed_check,
                       converged=converged, **kw)
    dof = fit_dof(t_dof)
    return NullCalibration(lam=kw.get("lam"), lam_tried=tried, t_dof=t_dof, t_check=t_check,
                           dof=dof, ks_pvalue=float(stats.kstest(t_check, stats.chi2(dof).cdf).pvalue))


def z_chi2(t: np.ndarray, dof: float) -> np.ndarray:
    """Z = Phi^-1(F_chi2(t; dof)), computed from the survival function for large t."""
    return stats.norm.isf(stats.chi2.sf(np.asarray(t, float), dof))


def z_empirical(t: np.ndarray, t_null: np.ndarray) -> np.ndarray:
    """Z of the empirical p-value p = (k + 1) / (n + 1), k of the n null toys with t_null >= t
    (the observed value counts as one more toy: p is exact for a continuous null and never 0, so
    Z is bounded at Phi^-1(1 - 1/(n + 1)) where no toy is above)."""
    tn = np.sort(np.asarray(t_null, float))
    above = len(tn) - np.searchsorted(tn, np.asarray(t, float), side="left")
    p = (above + 1) / (len(tn) + 1)
    return stats.norm.isf(p)


def z_empirical_max(n_null: int) -> float:
    """The largest Z :func:`z_empirical` gives with ``n_null`` null toys: p = 1 / (n_null + 1)."""
    return float(stats.norm.isf(1.0 / (n_null + 1)))
