"""Tiny synthetic samples for the eval tests (independent of clrdist.data.toy)."""

import numpy as np
import torch


def prong_jets(n, n_prongs, *, seed, n_particles=20, spread=0.05, sep=0.4):
    """Jets of `n_prongs` collimated prongs (pT GeV, eta, phi) around eta=0.3, phi=3.0 (near the
    seam to exercise phi wrapping); store-like dict with label 1 for 2-prong jets."""
    rng = np.random.default_rng(seed)
    per = n_particles // n_prongs
    p = np.zeros((n, n_particles, 3), np.float32)
    m = np.zeros((n, n_particles), bool)
    ang = rng.uniform(0, 2 * np.pi, n)
    for k in range(n_prongs):
        off = 0.0 if n_prongs == 1 else (k - 0.5) * sep
        ce, cp = 0.3 + off * np.cos(ang), 3.0 + off * np.sin(ang)
        nreal = rng.integers(per // 2, per + 1, n)
        for j in range(per):
            i = k * per + j
            real = j < nreal
            p[:, i, 0] = np.where(real, rng.exponential(600 / n_particles, n) + 1, 0)
            p[:, i, 1] = np.where(real, ce + rng.normal(0, spread, n), 0)
            p[:, i, 2] = np.where(real, np.mod(cp + rng.normal(0, spread, n) + np.pi, 2 * np.pi) - np.pi, 0)
            m[:, i] = real
    label = np.full(n, 1 if n_prongs == 2 else 0, np.int8)
    return {"particles": p, "mask": m, "label": label, "features": np.zeros((n, 1), np.float32)}


def mixed(n_per_class, *, seed, **kw):
    a, b = prong_jets(n_per_class, 1, seed=seed, **kw), prong_jets(n_per_class, 2, seed=seed + 1, **kw)
    out = {k: np.concatenate([a[k], b[k]]) for k in a}
    perm = np.random.default_rng(seed + 2).permutation(2 * n_per_class)
    return {k: v[perm] for k, v in out.items()}


def dijet_toy(n_bkg, n_sig, *, seed, dim=3, mjj_range=(2500.0, 6000.0), sqrt_s=13000.0,
              p2=8.0, p3=4.0, m_sig=3500.0, w_sig=150.0):
    """Falling m_jj spectrum (density in y = m_jj/sqrt(s) ~ (1-y)^p2 y^-p3) with features
    independent of m_jj, plus a Gaussian signal bump whose first feature sits at +2.5."""
    rng = np.random.default_rng(seed)
    y = np.linspace(mjj_range[0] / sqrt_s, mjj_range[1] / sqrt_s, 20001)
    cdf = np.cumsum((1 - y) ** p2 * y ** -p3)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    mjj_b = np.interp(rng.random(n_bkg), cdf, y) * sqrt_s
    x_b = rng.normal(size=(n_bkg, dim))
    mjj_s = rng.normal(m_sig, w_sig, n_sig)
    x_s = rng.normal(size=(n_sig, dim))
    x_s[:, 0] = rng.normal(2.5, 0.5, n_sig)
    return np.r_[mjj_b, mjj_s], np.r_[x_b, x_s], np.r_[np.zeros(n_bkg, int), np.ones(n_sig, int)]


class TinyDeepSet(torch.nn.Module):
    """A deep set (x, mask) -> (B, 16): the encoder the supervised baseline trains in tests."""

    def __init__(self):
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 16))

    def forward(self, x, mask):
        return (self.phi(x * 10) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
