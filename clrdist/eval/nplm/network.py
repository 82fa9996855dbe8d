"""NPLM's network model: t of one toy (:func:`nplm_t_network`) or of T toys with stacked weights
(:func:`fit_networks_batched`) with a small weight-clipped sigmoid network, and
:func:`single_thread_on_cpu`, the one-thread setting tiny fits run under on CPUs (the other
evaluations' small networks use it too).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from clrdist.eval.nplm.kernel import _as_tensor


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
