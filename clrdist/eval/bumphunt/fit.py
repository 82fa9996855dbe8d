"""The background fit of a CWoLa hunt, its local significance, and the global significance
beyond the toy count (steps 4-5 of :mod:`clrdist.eval.bumphunt`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

MIN_TAIL = 10  # toys at or above the observed maximum for the empirical global p


def dijet_function(y: np.ndarray, log_p1: float, p2: float, p3: float) -> np.ndarray:
    """f(y) = p1 (1-y)^p2 y^-p3 with p1 = exp(log_p1) (keeps the fit well scaled)."""
    return np.exp(log_p1 + p2 * np.log1p(-y) - p3 * np.log(y))


def log_bins(lo: float, hi: float, n: int) -> np.ndarray:
    return np.geomspace(lo, hi, n + 1)



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
