"""NPLM: the New Physics Learning Machine (D'Agnolo, Wulzer; Grosso, Letizia et al.).

A goodness-of-fit test of data D against a background-only reference sample R in any feature
space (here: the learned representation, or the raw inputs). With w = N_D(expected) / N_R, a
function f(x) (the log density ratio n(x|D) / n(x|R)) minimises

    L(f) = w * sum_{x in R} (exp f(x) - 1) - sum_{x in D} f(x)            (+ regulariser)

and the test statistic is t = -2 min L = 2 [ sum_D f + w sum_R (1 - exp f) ].

Models for f:
- ``kernel``: Nystrom Gaussian-kernel model f(x) = sum_j a_j k(x, c_j) with M centres drawn from
  R u D, width sigma = 90th percentile of pairwise distances of reference points (features
  standardised with reference statistics), L2 penalty n lam a^T K_MM a (n = N_R + N_D, the
  Falkon convention); the convex loss is minimised by damped Newton iterations in torch, on
  whatever device the inputs live on (CUDA when given CUDA tensors or ``device="cuda"``).
- ``network``: a small network (sigmoid hidden layer) with weight clipping, full-batch Adam,
  trained until the loss has converged (no decrease by more than ``tol`` = 5e-3 in the last
  ``patience`` = 1000 steps; at most ``max_steps`` = 1e5, else the toy counts as unconverged).

Calibration: reference-only toys give the null distribution of t; a chi2 with free degrees of
freedom (loc 0, scale 1) is fitted to it. Signal-injected toys (Poisson(N_sig) signal events)
give the empirical Z from p = (k + 1) / (n + 1) (k of n null toys at or above t) and, only when
the evaluation is calibrated (KS p-value of the null toys against the fitted chi2 > 0.01 and
every fit converged), Z = Phi^-1(F_chi2(t; dof)).

Metric names (prefix ``nplm`` by default): ``nplm_calibrated`` (1 / 0), ``nplm_dof``,
``nplm_ks_pvalue``, ``nplm_n_unconverged``, ``nplm_t_null_median``, ``nplm_t_sig_median``,
``nplm_z_emp_median``, ``nplm_z_chi2_median`` and ``nplm_z_chi2_at_median_t`` (calibrated only),
``nplm_n_ref``, ``nplm_n_data``, ``nplm_n_sig``, ``nplm_n_toys_null``, ``nplm_n_toys_sig``,
``nplm_sigma``, ``nplm_M``; figure ``nplm_t.png``; table ``nplm_toys``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from clrdist.eval.metrics import EvalResult, binary_labels

KS_MIN = 0.01  # null toys vs the fitted chi2: below this KS p-value the chi2 Z is not quoted

# ---------------------------------------------------------------------------------------------
# test statistic


def _as_tensor(x, device, dtype) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.to(device=device if device is not None else x.device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def kernel_width(ref: torch.Tensor, *, quantile: float = 0.9, max_points: int = 1000,
                 seed: int = 0) -> float:
    """sigma = ``quantile`` of the pairwise distances of (at most ``max_points``) reference
    points."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ref), generator=g)[:max_points].to(ref.device)
    sub = ref[idx].double()
    d = torch.cdist(sub, sub).cpu().numpy()
    return float(np.quantile(d[np.triu_indices(len(sub), k=1)], quantile))


def _gauss(x: torch.Tensor, c: torch.Tensor, sigma: float, chunk: int = 16384) -> torch.Tensor:
    """Gaussian kernel matrix (len(x), len(c)), computed in row chunks."""
    out = torch.empty(len(x), len(c), dtype=x.dtype, device=x.device)
    for s in range(0, len(x), chunk):
        d2 = torch.cdist(x[s:s + chunk], c).square_()
        out[s:s + chunk] = torch.exp_(d2.mul_(-0.5 / sigma**2))
    return out


@dataclass
class KernelFit:
    t: float
    iterations: int
    converged: bool
    sigma: float
    M: int


def nplm_t_kernel(ref, data, *, n_expected: float | None = None, M: int = 500,
                  sigma: float | None = None, lam: float = 1e-6, max_iter: int = 100,
                  tol: float = 1e-6, seed: int = 0, device: str | torch.device | None = None,
                  dtype: torch.dtype = torch.float64, standardise: bool = True) -> KernelFit:
    """t for one toy with the Nystrom Gaussian-kernel model.

    ref: (N_R, d), data: (N_D, d) arrays or tensors (device taken from ``ref`` unless given).
    n_expected: expected number of data events under the null (default N_D); w = n_expected/N_R.
    Newton's method with backtracking on the convex loss; stops when the Newton decrement
    (the predicted remaining decrease of L, so t is exact to ~2 ``tol``) is below ``tol``.
    """
    if device is None and torch.is_tensor(ref):
        device = ref.device
    r = _as_tensor(ref, device, dtype)
    d = _as_tensor(data, device, dtype)
    if standardise:
        mu, sd = r.mean(0), r.std(0).clamp_min(1e-12)
        r, d = (r - mu) / sd, (d - mu) / sd
    n_r, n_d = len(r), len(d)
    w = (n_expected if n_expected is not None else n_d) / n_r
    if sigma is None:
        sigma = kernel_width(r, seed=seed)
    g = torch.Generator().manual_seed(seed)
    both = torch.cat([r, d])
    m = min(M, len(both))
    centres = both[torch.randperm(len(both), generator=g)[:m].to(both.device)]
    # Whitened Nystrom features: with K_MM + eps I = L L^T and a = L^-T b, f = (K_xM L^-T) b and
    # the penalty a^T K_MM a becomes |b|^2, so the Newton system is well conditioned (the plain
    # a-parametrisation has condition numbers ~1e10 and converges only linearly).
    eye = torch.eye(m, dtype=dtype, device=r.device)
    eps = 1e-7 if dtype == torch.float64 else 1e-4  # relative to the unit kernel diagonal
    chol = torch.linalg.cholesky(_gauss(centres, centres, sigma) + eps * eye)
    b_r = torch.linalg.solve_triangular(chol, _gauss(r, centres, sigma).T, upper=False).T
    k_d_sum = _gauss(d, centres, sigma).sum(0)  # only sum_D f = b . (L^-1 sum_D k) is needed
    b_d = torch.linalg.solve_triangular(chol, k_d_sum[:, None], upper=False)[:, 0]
    pen = (n_r + n_d) * lam

    def loss(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ef = torch.exp(b_r @ b)
        return w * (ef - 1).sum() - b_d @ b + pen * (b @ b), ef

    b = torch.zeros(m, dtype=dtype, device=r.device)
    val, ef = loss(b)
    converged, iterations = False, 0
    while iterations < max_iter:
        iterations += 1
        grad = w * (b_r.T @ ef) - b_d + 2 * pen * b
        hess = 2 * pen * eye
        for c in range(0, n_r, 16384):  # chunked: no second (N_R, M) temporary
            bc = b_r[c:c + 16384]
            hess = hess + w * (bc.T * ef[c:c + 16384]) @ bc
        step = _solve_psd(hess, grad)
        decrement = float(grad @ step) / 2  # ~ the remaining gap L - min L
        if decrement < tol:
            converged = True
            break
        s = 1.0
        while True:  # backtracking (Armijo) keeps exp() finite and the loss decreasing
            new_b = b - s * step
            new_val, new_ef = loss(new_b)
            if torch.isfinite(new_val) and new_val <= val - 0.5 * s * decrement:
                break
            s *= 0.5
            if s < 1e-6:
                break
        if s < 1e-6:  # no further decrease resolvable in floating point
            converged = decrement < 100 * tol
            break
        b, val, ef = new_b, new_val, new_ef
    f_r = b_r @ b
    t = 2 * (float(b_d @ b) + w * float((1 - torch.exp(f_r)).sum()))
    return KernelFit(t=t, iterations=iterations, converged=converged, sigma=float(sigma), M=m)


def _solve_psd(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    try:
        ch = torch.linalg.cholesky(h)
        return torch.cholesky_solve(g[:, None], ch)[:, 0]
    except RuntimeError:  # numerically indefinite: least squares is still a descent direction
        return torch.linalg.lstsq(h, g[:, None]).solution[:, 0]


@dataclass
class NetworkFit:
    t: float
    steps: int
    converged: bool


def nplm_t_network(ref, data, *, n_expected: float | None = None, hidden: tuple[int, ...] = (4,),
                   clip: float = 9.0, max_steps: int = 100_000, tol: float = 5e-3,
                   patience: int = 1000, lr: float = 5e-3, seed: int = 0,
                   device: str | torch.device | None = None, standardise: bool = True
                   ) -> NetworkFit:
    """t for one toy with a small sigmoid network whose weights are clipped to [-clip, clip]
    after every full-batch Adam step (the original NPLM regularisation).

    Trains until the loss has converged: stop when the lowest loss seen has not decreased by
    more than ``tol`` (t = -2 L, so t is settled to 2 ``tol``) during the last ``patience``
    steps; ``converged`` is False when ``max_steps`` ran out first."""
    if device is None and torch.is_tensor(ref):
        device = ref.device
    r = _as_tensor(ref, device, torch.float32)
    d = _as_tensor(data, device, torch.float32)
    if standardise:
        mu, sd = r.mean(0), r.std(0).clamp_min(1e-12)
        r, d = (r - mu) / sd, (d - mu) / sd
    w = (n_expected if n_expected is not None else len(d)) / len(r)
    with single_thread_on_cpu(r.device):
        return _fit_network(r, d, w, hidden, clip, lr, seed, max_steps, tol, patience)


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device):
    """Tiny networks on CPU run several times faster on one thread than on a contended pool."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _fit_network(r, d, w, hidden, clip, lr, seed, max_steps, tol, patience) -> NetworkFit:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = r.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.Sigmoid()]
        width = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(r.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    check = max(1, min(50, patience))  # read the loss back every `check` steps (no per-step sync)
    best, best_step, step, converged = float("inf"), 0, 0, False
    while step < max_steps:
        loss = w * torch.expm1(net(r)).sum() - net(d).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p in net.parameters():
                p.clamp_(-clip, clip)
        step += 1
        if step % check == 0:
            value = float(loss.detach())
            if value < best - tol:
                best, best_step = value, step
            elif step - best_step >= patience:
                converged = True
                break
    with torch.no_grad():
        t = 2 * (float(net(d).double().sum()) - w * float(torch.expm1(net(r).double()).sum()))
    return NetworkFit(t=t, steps=step, converged=converged)


# ---------------------------------------------------------------------------------------------
# toys and calibration


def run_toys(background, signal=None, *, n_ref: int, n_data: float, n_sig: float = 0.0,
             n_toys: int, model: str = "kernel", seed: int = 0,
             device: str | torch.device | None = None, converged: list[bool] | None = None,
             **model_kw) -> np.ndarray:
    """t for ``n_toys`` toys. Each toy draws a fresh reference of ``n_ref`` events and data of
    Poisson(n_data) background plus Poisson(n_sig) signal events from the pools
    (background: (N_B, d), signal: (N_S, d); reference and data background disjoint within a
    toy). w = n_data / n_ref (the null expectation). ``converged``, when given, receives one
    bool per toy (did the fit converge)."""
    rng = np.random.default_rng(seed)
    bkg = _as_tensor(background, device, torch.float64 if model == "kernel" else torch.float32)
    sig = None if signal is None else _as_tensor(signal, bkg.device, bkg.dtype)
    if model == "kernel" and model_kw.get("sigma") is None:
        # one kernel width for all toys (a hyper-parameter of the test, not refitted per toy),
        # from reference-sized background samples in standardised coordinates
        z = (bkg - bkg.mean(0)) / bkg.std(0).clamp_min(1e-12)
        model_kw = dict(model_kw, sigma=kernel_width(z[:max(n_ref, 2)], seed=seed))
    ts = np.empty(n_toys)
    for i in range(n_toys):
        nd = rng.poisson(n_data)
        ns = rng.poisson(n_sig) if n_sig > 0 else 0
        if n_ref + nd > len(bkg):
            raise ValueError(f"background pool of {len(bkg)} too small for n_ref={n_ref} + "
                             f"data {nd}")
        perm = torch.as_tensor(rng.permutation(len(bkg))[:n_ref + nd], device=bkg.device)
        ref, data = bkg[perm[:n_ref]], bkg[perm[n_ref:]]
        if ns:
            if sig is None or ns > len(sig):
                raise ValueError("signal pool too small for the injected signal")
            data = torch.cat([data, sig[torch.as_tensor(rng.choice(len(sig), ns, replace=False),
                                                        device=bkg.device)]])
        toy_seed = int(rng.integers(2**31))
        if model == "kernel":
            # small problems: one CPU thread is faster than a (possibly contended) pool
            small = n_ref * model_kw.get("M", 500) < 2e7
            with single_thread_on_cpu(bkg.device) if small else contextlib.nullcontext():
                fit = nplm_t_kernel(ref, data, n_expected=n_data, seed=toy_seed, **model_kw)
        elif model == "network":
            fit = nplm_t_network(ref, data, n_expected=n_data, seed=toy_seed, **model_kw)
        else:
            raise KeyError(f"unknown NPLM model {model!r}; known: ['kernel', 'network']")
        ts[i] = fit.t
        if converged is not None:
            converged.append(bool(fit.converged))
    return ts


def fit_dof(t_null: np.ndarray) -> float:
    """Degrees of freedom of a chi2 (loc 0, scale 1) fitted to null t values by ML."""
    t = np.asarray(t_null, dtype=np.float64)
    t = np.clip(t, 1e-9, None)  # the chi2 density needs t > 0; tiny negative t from round-off
    dof, _, _ = stats.chi2.fit(t, np.mean(t), floc=0, fscale=1)
    return float(dof)


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


def nplm_evaluation(rep: np.ndarray, label: np.ndarray, *, n_ref: int = 5000,
                    n_data: int = 1000, n_sig: float = 50.0, n_toys_null: int = 100,
                    n_toys_sig: int = 30, model: str = "kernel", prefix: str = "nplm",
                    seed: int = 0, device: str | None = None, figures: bool = True,
                    M: int = 200, ref_ratio: float = 5.0, **model_kw) -> EvalResult:
    """Calibrate on reference-only toys and measure Z for signal-injected toys.

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
    t0 = run_toys(bkg, None, n_toys=n_toys_null, seed=seed, converged=converged, **kw)
    t1 = run_toys(bkg, sig, n_sig=n_sig, n_toys=n_toys_sig, seed=seed + 1, converged=converged,
                  **kw)
    dof = fit_dof(t0)
    ks = stats.kstest(t0, stats.chi2(dof).cdf).pvalue
    n_unconverged = len(converged) - sum(converged)
    # the chi2 Z is quoted only when the null toys follow the fitted chi2 and every fit converged
    calibrated = ks > KS_MIN and n_unconverged == 0
    ze = z_empirical(t1, t0)
    p = prefix
    metrics = {
        f"{p}_dof": dof, f"{p}_ks_pvalue": float(ks), f"{p}_calibrated": float(calibrated),
        f"{p}_n_unconverged": float(n_unconverged),
        f"{p}_t_null_median": float(np.median(t0)), f"{p}_t_sig_median": float(np.median(t1)),
        f"{p}_z_emp_median": float(np.median(ze)),
        f"{p}_n_ref": float(n_ref), f"{p}_n_data": float(n_data), f"{p}_n_sig": float(n_sig),
        f"{p}_n_toys_null": float(n_toys_null), f"{p}_n_toys_sig": float(n_toys_sig),
    }
    if calibrated:
        metrics[f"{p}_z_chi2_median"] = float(np.median(z_chi2(t1, dof)))
        metrics[f"{p}_z_chi2_at_median_t"] = float(z_chi2(np.median(t1), dof))
    if model == "kernel":
        metrics[f"{p}_M"], metrics[f"{p}_sigma"] = float(M), float(model_kw["sigma"])
    tables = {f"{p}_toys": [{"kind": "null", "t": float(v)} for v in t0]
              + [{"kind": "signal", "t": float(v)} for v in t1]}
    figs = {f"{p}_t.png": t_figure(t0, t1, dof)} if figures else {}
    return EvalResult(metrics=metrics, figures=figs, tables=tables)


def t_figure(t_null: np.ndarray, t_sig: np.ndarray, dof: float):
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
