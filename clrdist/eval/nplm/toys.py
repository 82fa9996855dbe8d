"""NPLM toys: reference and data samples drawn from the pools, and t fitted for each toy with
either model (:func:`run_toys`: one toy at a time on CPUs, batches of toys on GPUs,
:func:`default_toy_batch`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from clrdist.eval.nplm.kernel import (
    KernelFit,
    _as_tensor,
    _kernel_features,
    default_dtype,
    full_fp32,
    kernel_width,
    newton_batched,
    nplm_t_kernel,
)
from clrdist.eval.nplm.network import (
    NetworkFit,
    fit_networks_batched,
    nplm_t_network,
    single_thread_on_cpu,
)


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
