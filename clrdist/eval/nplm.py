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
freedom (loc 0, scale 1) is fitted to one set of them and checked (KS) on an independent set.
The kernel model's penalty lam, unless given, is the smallest of ``LAM_GRID`` whose fitting toys
follow their fitted chi2 (KS p >= ``LAM_KS`` and variance <= ``LAM_VAR`` x 2 dof, since KS is
blind to a tail of a few toys; :func:`choose_lambda`): lam as small as possible
while t stays chi2-distributed (Letizia et al. 2022). Too small a lam at small N_R lets single
isolated data events (discrete raw features: empty object slots, rare multiplicities) carry a
spike of f, and the null t grows a tail far beyond any chi2 (ADC2021-like raw features, N_R 1000,
M 100: var t / 2 dof 356 at lam 1e-6, a chi2 has 1; chi2-like from lam 1e-4, docs/events.md).
Signal-injected toys (Poisson(N_sig) signal events) give the empirical Z from
p = (k + 1) / (n + 1) (k of the n null toys of both sets at or above t) and, only when the
evaluation is calibrated (KS p-value of the independent null toys against the fitted chi2 > 0.01
and every fit converged), Z = Phi^-1(F_chi2(t; dof)).

Devices: toys are drawn in the same order whatever the device; on GPUs many toys are fitted at
once (the kernel model's Newton iterations batched over toys with no host read per step, in
float32; the network model as stacked per-toy weights), on CPUs one by one in float64 as before.

Metric names (prefix ``nplm`` by default): ``nplm_calibrated`` (1 / 0), ``nplm_dof``,
``nplm_ks_pvalue``, ``nplm_n_unconverged``, ``nplm_t_null_median``, ``nplm_t_sig_median``,
``nplm_z_emp_median``, ``nplm_z_chi2_median`` and ``nplm_z_chi2_at_median_t`` (calibrated only),
the medians' bootstrap errors over the signal toys ``nplm_z_emp_median_std`` and
``nplm_z_chi2_median_std``,
``nplm_n_ref``, ``nplm_n_data``, ``nplm_n_sig``, ``nplm_n_toys_null``, ``nplm_n_toys_sig``,
``nplm_n_toys_dof``,
``nplm_sigma``, ``nplm_M``, ``nplm_lam`` (kernel); figure ``nplm_t.png``; table ``nplm_toys``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from clrdist.eval.metrics import EvalResult, binary_labels

KS_MIN = 0.01  # null toys vs the fitted chi2: below this KS p-value the chi2 Z is not quoted
LAM_GRID = (1e-6, 1e-5, 1e-4, 1e-3)  # kernel penalties choose_lambda tries, smallest first
LAM_KS = 0.1  # ... taking the first whose fitting toys follow their own fitted chi2 this well
LAM_VAR = 2.0  # ... and whose t varies at most this many times a chi2's 2 dof (KS misses tails)

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


def default_dtype(device: torch.device) -> torch.dtype:
    """The kernel model's precision: float64 on CPUs (the reference numbers), float32 on GPUs
    (tests/test_eval_nplm.py: t within 1e-3 of float64 relative to the null t's spread)."""
    return torch.float64 if device.type == "cpu" else torch.float32


@contextlib.contextmanager
def full_fp32():
    """float32 matmuls in full precision (no TF32) for the duration: NPLM's Hessians and
    gradients need the 23-bit mantissa, whatever the training's precision policy set."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _kernel_features(r: torch.Tensor, d: torch.Tensor, m: int, sigma: float, seed: int,
                     standardise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One toy's whitened Nystrom features: b_r (N_R, m) and b_d = L^-1 sum_D k (m,), computed
    in float64 (the Cholesky of K_MM needs it) and returned in ``r``'s dtype.

    With K_MM + eps I = L L^T and a = L^-T b, f = (K_xM L^-T) b and the penalty a^T K_MM a
    becomes |b|^2, so the Newton system is well conditioned (the plain a-parametrisation has
    condition numbers ~1e10 and converges only linearly)."""
    out_dtype, r, d = r.dtype, r.double(), d.double()
    if standardise:
        mu, sd = r.mean(0), r.std(0).clamp_min(1e-12)
        r, d = (r - mu) / sd, (d - mu) / sd
    g = torch.Generator().manual_seed(seed)
    both = torch.cat([r, d])
    centres = both[torch.randperm(len(both), generator=g)[:m].to(both.device)]
    eye = torch.eye(m, dtype=r.dtype, device=r.device)
    eps = 1e-7  # relative to the unit kernel diagonal
    chol = torch.linalg.cholesky(_gauss(centres, centres, sigma) + eps * eye)
    b_r = torch.linalg.solve_triangular(chol, _gauss(r, centres, sigma).T, upper=False).T
    k_d_sum = _gauss(d, centres, sigma).sum(0)  # only sum_D f = b . (L^-1 sum_D k) is needed
    b_d = torch.linalg.solve_triangular(chol, k_d_sum[:, None], upper=False)[:, 0]
    return b_r.to(out_dtype), b_d.to(out_dtype)


# backtracking step sizes 1, 1/2, ..., 2^-19: the line search stops below 1e-6
_SCALES = [0.5**k for k in range(20)]


def newton_batched(b_r: torch.Tensor, b_d: torch.Tensor, w: float, pen: torch.Tensor, *,
                   max_iter: int = 100, tol: float = 1e-6, check_every: int | None = None,
                   lazy: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise L(b) = w sum_R (e^f - 1) - b_d . b + pen |b|^2 (f = b_r b) for T toys at once.

    b_r: (T, N_R, M), b_d: (T, M), pen: (T,) penalties. Damped Newton per toy: the step solves
    the (T, M, M) Hessians in one batched Cholesky; the backtracking (Armijo) line search tries
    every step size 1, 1/2, ..., 2^-19 at once and takes the largest that decreases the loss
    enough (the sequential backtracking's choice), so on GPUs no step reads a value back to the
    host (on CPUs the full step is tried first, the others only when a toy rejects it).
    A toy stops when its Newton decrement (the predicted remaining decrease of L, so t is exact
    to ~2 ``tol``) is below ``tol``; one that can no longer decrease counts as converged when the
    decrement is below 100 ``tol``. ``all done`` is read every ``check_every`` iterations (1 on
    CPUs, 4 on GPUs: the only host syncs; ``lazy`` = the CPU line search, default on CPUs).
    Returns t (T,), iterations (T,), converged (T,)."""
    T, n, m = b_r.shape
    dev, dt = b_r.device, b_r.dtype
    if lazy is None:  # CPUs: host reads are free, read back when it saves work
        lazy = dev.type == "cpu"
    if check_every is None:
        check_every = 1 if lazy else 4
    pen = pen.to(device=dev, dtype=dt)[:, None]
    eye = torch.eye(m, dtype=dt, device=dev)
    scales = torch.tensor(_SCALES, dtype=dt, device=dev)
    chunk = max(1, (1 << 24) // max(1, T * m))  # rows per Hessian chunk: bounded temporaries
    b = torch.zeros(T, m, dtype=dt, device=dev)
    f = torch.zeros(T, n, dtype=dt, device=dev)
    val = torch.zeros(T, dtype=dt, device=dev)
    active = torch.ones(T, dtype=torch.bool, device=dev)
    converged = torch.zeros(T, dtype=torch.bool, device=dev)
    iters = torch.zeros(T, dtype=torch.long, device=dev)
    for it in range(max_iter):
        iters += active
        ef = torch.exp(f)
        grad = w * torch.bmm(b_r.mT, ef[..., None])[..., 0] - b_d + 2 * pen * b
        hess = (2 * pen)[..., None] * eye
        for c in range(0, n, chunk):  # chunked: no second (T, N_R, M) temporary
            bc = b_r[:, c:c + chunk]
            hess = hess + w * torch.bmm((bc * ef[:, c:c + chunk, None]).mT, bc)
        chol, info = torch.linalg.cholesky_ex(hess)
        step = torch.cholesky_solve(grad[..., None], chol)[..., 0]
        # numerically indefinite (never seen in float64): a scaled gradient step still descends
        diag = hess.diagonal(dim1=1, dim2=2).amax(1, keepdim=True)
        step = torch.where((info > 0)[:, None], grad / diag, step)
        decrement = (grad * step).sum(1) / 2  # ~ the remaining gap L - min L
        done = active & (decrement < tol)
        converged |= done
        active &= ~done
        f_step = torch.bmm(b_r, step[..., None])[..., 0]
        line = (f, f_step, b, step, b_d, w, pen[:, 0], val, decrement)
        vals, ok = _armijo(_SCALES[:1], *line)
        # CPUs: the full step is usually taken, and reading that back costs nothing
        if not lazy or not bool((ok[:, 0] | ~active).all()):
            vals, ok = _armijo(_SCALES, *line)
        first = ok.to(torch.int8).argmax(1)  # the largest acceptable step size
        found = ok.any(1)
        stalled = active & ~found  # no decrease resolvable in floating point
        converged |= stalled & (decrement < 100 * tol)
        active &= ~stalled
        s = torch.where(active, scales[first], torch.zeros((), dtype=dt, device=dev))
        b = b - s[:, None] * step
        val = torch.where(active, vals.gather(1, first[:, None])[:, 0], val)
        f = torch.bmm(b_r, b[..., None])[..., 0]
        if (it + 1) % check_every == 0 and not bool(active.any()):
            break
    f = f.double()  # t sums N_R terms: accumulate in float64 whatever the iterations' dtype
    t = 2 * ((b_d.double() * b.double()).sum(1) - w * torch.expm1(f).sum(1))
    return t, iters, converged


def _armijo(sizes: list[float], f, f_step, b, step, b_d, w, pen, val, decrement
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss at b - s step for each s in ``sizes`` (T, len(sizes)), and which of those
    decrease it enough (Armijo: by at least s decrement / 2)."""
    vals = torch.stack([w * torch.expm1(f - s * f_step).sum(1) - (b_d * (b - s * step)).sum(1)
                        + pen * (b - s * step).square().sum(1) for s in sizes], 1)
    scale = torch.tensor(sizes, dtype=vals.dtype).to(vals.device, non_blocking=True)
    bound = val[:, None] - 0.5 * scale * decrement[:, None]
    return vals, torch.isfinite(vals) & (vals <= bound)


def nplm_t_kernel(ref, data, *, n_expected: float | None = None, M: int = 500,
                  sigma: float | None = None, lam: float = 1e-6, max_iter: int = 100,
                  tol: float = 1e-6, seed: int = 0, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, standardise: bool = True) -> KernelFit:
    """t for one toy with the Nystrom Gaussian-kernel model.

    ref: (N_R, d), data: (N_D, d) arrays or tensors (device taken from ``ref`` unless given).
    n_expected: expected number of data events under the null (default N_D); w = n_expected/N_R.
    dtype: default float64 on CPUs, float32 on GPUs (:func:`default_dtype`).
    Newton's method with backtracking on the convex loss (:func:`newton_batched` with one toy);
    stops when the Newton decrement is below ``tol``.
    """
    if device is None and torch.is_tensor(ref):
        device = ref.device
    dev = torch.device(device or "cpu")
    dtype = dtype or default_dtype(dev)
    r = _as_tensor(ref, dev, dtype)
    d = _as_tensor(data, dev, dtype)
    n_r, n_d = len(r), len(d)
    w = (n_expected if n_expected is not None else n_d) / n_r
    with full_fp32():
        if sigma is None:
            z = r
            if standardise:
                z = (r - r.mean(0)) / r.std(0).clamp_min(1e-12)
            sigma = kernel_width(z, seed=seed)
        m = min(M, n_r + n_d)
        b_r, b_d = _kernel_features(r, d, m, sigma, seed, standardise)
        pen = torch.tensor([(n_r + n_d) * lam], dtype=dtype)
        t, iters, conv = newton_batched(b_r[None], b_d[None], w, pen, max_iter=max_iter, tol=tol)
    return KernelFit(t=float(t[0]), iterations=int(iters[0]), converged=bool(conv[0]),
                     sigma=float(sigma), M=m)


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
def single_thread_on_cpu(device: torch.device | str):
    """Tiny networks on CPU run several times faster on one thread than on a contended pool."""
    if torch.device(device).type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _network(width: int, hidden: tuple[int, ...], seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.Sigmoid()]
        width = h
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))


def _fit_network(r, d, w, hidden, clip, lr, seed, max_steps, tol, patience) -> NetworkFit:
    net = _network(r.shape[1], hidden, seed).to(r.device)
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


def fit_networks_batched(r: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor, w: float, *,
                         seeds: list[int], hidden: tuple[int, ...] = (4,), clip: float = 9.0,
                         max_steps: int = 100_000, tol: float = 5e-3, patience: int = 1000,
                         lr: float = 5e-3) -> list[NetworkFit]:
    """:func:`nplm_t_network`'s fit for T toys at once: one network per toy, their weights
    stacked (T, ...) and applied with batched matmuls, Adam written out per element (exactly
    torch.optim.Adam's update) so each toy stops at its own convergence.

    r: (T, N_R, d), d: (T, N_D_max, d) standardised, d_mask: (T, N_D_max) bool (real data
    events; toys have Poisson-varying sizes); seeds: each toy's initialisation seed (the
    weights :func:`nplm_t_network` would start from). The losses are read back every 50 steps,
    one host read for all toys."""
    T = len(seeds)
    nets = [_network(r.shape[2], tuple(hidden), s) for s in seeds]
    params = [torch.stack([p.detach() for p in ps]).to(r.device).requires_grad_()
              for ps in zip(*(list(n.parameters()) for n in nets), strict=True)]
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_sq = [torch.zeros_like(p) for p in params]
    dm = d_mask.to(r.dtype)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def forward(x: torch.Tensor) -> torch.Tensor:  # (T, n, d) -> (T, n)
        h = x
        for i in range(0, len(params) - 2, 2):
            h = torch.sigmoid(torch.baddbmm(params[i + 1][:, None], h, params[i].mT))
        return torch.baddbmm(params[-1][:, None], h, params[-2].mT)[..., 0]

    check = max(1, min(50, patience))
    active = torch.ones(T, dtype=torch.bool, device=r.device)
    act = np.ones(T, bool)
    best, best_step = np.full(T, np.inf), np.zeros(T, int)
    steps, converged = np.zeros(T, int), np.zeros(T, bool)
    step = 0
    while step < max_steps and act.any():
        loss = w * torch.expm1(forward(r)).sum(1) - (forward(d) * dm).sum(1)  # (T,)
        grads = torch.autograd.grad(loss.sum(), params)
        step += 1
        bc1, bc2 = 1 - beta1 ** step, (1 - beta2 ** step) ** 0.5
        with torch.no_grad():
            for p, g, m1, m2 in zip(params, grads, exp_avg, exp_sq, strict=True):
                on = active.view(-1, *([1] * (p.dim() - 1)))
                m1.copy_(torch.where(on, m1.lerp(g, 1 - beta1), m1))
                m2.copy_(torch.where(on, m2 * beta2 + (1 - beta2) * g * g, m2))
                new = (p - (lr / bc1) * m1 / (m2.sqrt() / bc2 + eps)).clamp_(-clip, clip)
                p.copy_(torch.where(on, new, p))
        steps[act] = step
        if step % check == 0:
            values = loss.detach().cpu().numpy()
            for i in np.flatnonzero(act):
                if values[i] < best[i] - tol:
                    best[i], best_step[i] = values[i], step
                elif step - best_step[i] >= patience:
                    converged[i], act[i] = True, False
            active = torch.as_tensor(act, device=r.device)
    with torch.no_grad():
        f_r, f_d = forward(r).double(), forward(d).double()
        t = 2 * ((f_d * dm).sum(1) - w * torch.expm1(f_r).sum(1))
    return [NetworkFit(t=float(v), steps=int(s), converged=bool(c))
            for v, s, c in zip(t.cpu().tolist(), steps, converged, strict=True)]


# ---------------------------------------------------------------------------------------------
# toys and calibration


@dataclass
class _Toy:
    ref: torch.Tensor  # (n_ref, d)
    data: torch.Tensor  # (n_d, d)
    seed: int


def _draw_toys(bkg: torch.Tensor, sig: torch.Tensor | None, rng: np.random.Generator, *,
               n_ref: int, n_data: float, n_sig: float, n_toys: int) -> list[_Toy]:
    toys = []
    for _ in range(n_toys):
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
        toys.append(_Toy(ref, data, int(rng.integers(2**31))))
    return toys


def default_toy_batch(device: torch.device, model: str, n_ref: int, M: int, itemsize: int
                      ) -> int:
    """Toys solved at once: one on CPUs (the sequential numbers), on GPUs as many as keep the
    kernel features (T, N_R, M) under 2 GiB (the network model: 256)."""
    if device.type == "cpu":
        return 1
    if model == "network":
        return 256
    return max(1, (2 << 30) // max(1, n_ref * M * itemsize))


def run_toys(background, signal=None, *, n_ref: int, n_data: float, n_sig: float = 0.0,
             n_toys: int, model: str = "kernel", seed: int = 0,
             device: str | torch.device | None = None, converged: list[bool] | None = None,
             toy_batch: int | None = None, **model_kw) -> np.ndarray:
    """t for ``n_toys`` toys. Each toy draws a fresh reference of ``n_ref`` events and data of
    Poisson(n_data) background plus Poisson(n_sig) signal events from the pools
    (background: (N_B, d), signal: (N_S, d); reference and data background disjoint within a
    toy). w = n_data / n_ref (the null expectation). ``converged``, when given, receives one
    bool per toy (did the fit converge). ``toy_batch``: toys fitted at once (batched Newton /
    stacked networks; default :func:`default_toy_batch`: 1 on CPUs, many on GPUs); the toys
    drawn and their t do not depend on it (to the fits' tolerance)."""
    if model not in ("kernel", "network"):
        raise KeyError(f"unknown NPLM model {model!r}; known: ['kernel', 'network']")
    rng = np.random.default_rng(seed)
    dev = torch.device(device) if device is not None else (
        background.device if torch.is_tensor(background) else torch.device("cpu"))
    dtype = (model_kw.get("dtype") or default_dtype(dev)) if model == "kernel" else torch.float32
    bkg = _as_tensor(background, dev, dtype)
    sig = None if signal is None else _as_tensor(signal, bkg.device, bkg.dtype)
    if model == "kernel" and model_kw.get("sigma") is None:
        # one kernel width for all toys (a hyper-parameter of the test, not refitted per toy),
        # from reference-sized background samples in standardised coordinates
        z = (bkg - bkg.mean(0)) / bkg.std(0).clamp_min(1e-12)
        model_kw = dict(model_kw, sigma=kernel_width(z[:max(n_ref, 2)], seed=seed))
    toys = _draw_toys(bkg, sig, rng, n_ref=n_ref, n_data=n_data, n_sig=n_sig, n_toys=n_toys)
    batch = toy_batch or default_toy_batch(dev, model, n_ref, model_kw.get("M", 500),
                                           bkg.element_size())
    fits: list[KernelFit | NetworkFit] = []
    for s in range(0, n_toys, batch):
        part = toys[s:s + batch]
        if model == "kernel" and len(part) == 1:
            # small problems: one CPU thread is faster than a (possibly contended) pool
            small = n_ref * model_kw.get("M", 500) < 2e7
            with single_thread_on_cpu(dev) if small else contextlib.nullcontext():
                fits.append(nplm_t_kernel(part[0].ref, part[0].data, n_expected=n_data,
                                          seed=part[0].seed, **model_kw))
        elif model == "kernel":
            fits += _kernel_toys(part, n_data, **model_kw)
        elif len(part) == 1:
            fits.append(nplm_t_network(part[0].ref, part[0].data, n_expected=n_data,
                                       seed=part[0].seed, **model_kw))
        else:
            fits += _network_toys(part, n_data, **model_kw)
    if converged is not None:
        converged.extend(bool(f.converged) for f in fits)
    return np.array([f.t for f in fits], dtype=np.float64)


def _kernel_toys(toys: list[_Toy], n_expected: float, *, M: int = 500, sigma: float,
                 lam: float = 1e-6, max_iter: int = 100, tol: float = 1e-6,
                 dtype: torch.dtype | None = None, standardise: bool = True
                 ) -> list[KernelFit]:
    """The kernel fits of toys with equal reference sizes, solved together."""
    n_r = len(toys[0].ref)
    with full_fp32():
        feats = [_kernel_features(t.ref, t.data, min(M, n_r + len(t.data)), sigma, t.seed,
                                  standardise) for t in toys]
        m = min(len(bd) for _, bd in feats)  # equal unless a toy has fewer than M events
        b_r = torch.stack([br[:, :m] for br, _ in feats]) if m == M else None
        if b_r is None:  # a toy smaller than M: solve it on its own
            return [nplm_t_kernel(t.ref, t.data, n_expected=n_expected, M=M, sigma=sigma,
                                  lam=lam, max_iter=max_iter, tol=tol, seed=t.seed,
                                  dtype=toys[0].ref.dtype, standardise=standardise)
                    for t in toys]
        b_d = torch.stack([bd for _, bd in feats])
        pen = torch.tensor([(n_r + len(t.data)) * lam for t in toys], dtype=b_r.dtype)
        t, iters, conv = newton_batched(b_r, b_d, n_expected / n_r, pen, max_iter=max_iter,
                                        tol=tol)
    return [KernelFit(t=float(v), iterations=int(i), converged=bool(c), sigma=float(sigma), M=m)
            for v, i, c in zip(t.cpu().tolist(), iters.cpu().tolist(), conv.cpu().tolist(),
                               strict=True)]


def _network_toys(toys: list[_Toy], n_expected: float, *, standardise: bool = True, **kw) -> list[NetworkFit]:
    """The network fits of toys with equal reference sizes, trained together."""
    rs, ds = [], []
    for t in toys:
        r, d = t.ref, t.data
        if standardise:
            mu, sd = r.mean(0), r.std(0).clamp_min(1e-12)
            r, d = (r - mu) / sd, (d - mu) / sd
        rs.append(r)
        ds.append(d)
    n_d = max(len(d) for d in ds)
    d_pad = torch.zeros(len(ds), n_d, rs[0].shape[1], dtype=rs[0].dtype, device=rs[0].device)
    d_mask = torch.zeros(len(ds), n_d, dtype=torch.bool, device=rs[0].device)
    for i, d in enumerate(ds):
        d_pad[i, :len(d)], d_mask[i, :len(d)] = d, True
    return fit_networks_batched(torch.stack(rs), d_pad, d_mask, n_expected / len(rs[0]),
                                seeds=[t.seed for t in toys], **kw)


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
