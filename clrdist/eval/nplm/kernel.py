"""NPLM's kernel model: t of one toy, or of T toys at once, with the Nystrom Gaussian-kernel model.

Owns the kernel width, the whitened Nystrom features, the batched damped-Newton minimiser
(:func:`newton_batched`) and :func:`nplm_t_kernel`, and the precision the fits run in
(:func:`default_dtype`, :func:`full_fp32`). The model itself is described in
:mod:`clrdist.eval.nplm`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch


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
