"""Is the contrastive training learning? Diagnostics of the projections of one global batch.

All functions take the two views' projections ``z1, z2: (N, D)`` of the same N samples (row i of
z1 and row i of z2 are a positive pair; the global batch after the all-gather) and return plain
floats. They are what the training loop logs next to the loss:

- ``pos_top1``: the share of anchors whose most similar column, among the 2N - 1 candidates of
  the NT-Xent denominator, is their positive. Chance is 1 / (2N - 1).
- ``alignment`` (Wang & Isola 2020, alpha = 2): E ||u_i - u'_i||^2 over positive pairs of unit
  vectors u; 0 for identical views, 2 for orthogonal ones.
- ``uniformity`` (Wang & Isola 2020, t = 2): log E exp(-2 ||u_i - u_j||^2) over distinct samples
  of one view; 0 for a collapsed batch, about -4 for points spread uniformly on a high-dimensional
  sphere.
- ``effective_rank`` (Roy & Vetterli 2007): exp of the entropy of the normalised singular values
  of the centred (N, D) matrix; 1 when every row is the same direction plus noise, up to min(N, D).
- ``z_std``: the mean per-dimension standard deviation of the unit vectors (Chen & He 2021);
  0 for a collapsed projection, 1 / sqrt(D) for a spread one.

``collapse_value(N)`` is the NT-Xent loss of a fully collapsed projection (every similarity equal):
log(2N - 1) with the positive kept in the denominator, log(2N - 2) without it.
"""

from __future__ import annotations

import math

import torch

from clrdist.distributed import all_gather_nograd, unit_fp32

__all__ = ["pos_top1", "alignment", "uniformity", "effective_rank", "z_std", "collapse_value",
           "contrastive_diagnostics", "global_diagnostics", "is_collapsed"]


def _unit(z: torch.Tensor) -> torch.Tensor:
    return unit_fp32(z.detach())


# ---- on the device, from unit rows u = z / |z|: each returns a 0-d tensor (no read back) ------

def _pos_top1(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    u = torch.cat([u1, u2])
    n = u1.shape[0]
    sim = u @ u.T
    sim.fill_diagonal_(float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n, device=sim.device), torch.arange(n, device=sim.device)])
    return (sim.argmax(1) == pos).float().mean()


def _alignment(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    return (u1 - u2).square().sum(1).mean()


def _uniformity(u: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    n = u.shape[0]
    if n < 2:
        return torch.full((), float("nan"), device=u.device)
    d2 = (2 - 2 * u @ u.T).clamp_min(0)  # |u_i - u_j|^2 of unit rows
    d2.fill_diagonal_(float("inf"))  # i != j: exp(-t * inf) = 0
    return torch.logsumexp((-t * d2).flatten(), 0) - math.log(n * (n - 1))


def _effective_rank(h: torch.Tensor) -> torch.Tensor:
    """Singular values as the square roots of the eigenvalues of the smaller Gram matrix of the
    centred rows (a symmetric eigensolver in float64: ~2.5x faster than an SVD at 256 x 512, same to 1e-5)."""
    c = h.detach().double()  # float64: the square root amplifies the rounding of small eigenvalues
    c = c - c.mean(0, keepdim=True)
    gram = c @ c.T if c.shape[0] <= c.shape[1] else c.T @ c
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = s.sum()
    p = s / total
    rank = torch.exp(-(p * p.log()).nansum())  # 0 log 0 = nan: left out
    ok = torch.isfinite(total) & (total > 0)
    return torch.where(ok, rank, torch.ones_like(rank))


def _z_std(u: torch.Tensor) -> torch.Tensor:
    return u.std(0).mean()


# ---- the public floats ------------------------------------------------------------------------

def pos_top1(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Share of the 2N anchors whose nearest of the other 2N - 1 columns is their positive."""
    return float(_pos_top1(_unit(z1), _unit(z2)))


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """E ||u - u'||^2 over positive pairs (alpha = 2)."""
    return float(_alignment(_unit(z1), _unit(z2)))


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E_{i != j} exp(-t ||u_i - u_j||^2) over the rows of one view."""
    return float(_uniformity(_unit(z), t))


def effective_rank(h: torch.Tensor) -> float:
    """exp(H(p)), p = singular values / their sum, of the centred (N, D) matrix."""
    return float(_effective_rank(h))


def z_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the standard deviation of the unit vectors."""
    return float(_z_std(_unit(z)))


def collapse_value(n: int, keep_positive: bool = True) -> float:
    """NT-Xent of a collapsed projection for a global batch of n samples (2n anchors)."""
    return math.log(2 * n - 1) if keep_positive else math.log(2 * n - 2)


def contrastive_diagnostics(z1: torch.Tensor, z2: torch.Tensor,
                            rep: torch.Tensor | None = None) -> dict[str, float]:
    """Every diagnostic above, by name; ``rep`` (N, H): the representation (before the head),
    whose effective rank is reported as ``rep_eff_rank``. Computed on the device, read back
    once (one host sync)."""
    u1, u2 = _unit(z1), _unit(z2)
    out = {"pos_top1": _pos_top1(u1, u2), "alignment": _alignment(u1, u2),
           "uniformity": _uniformity(u1), "z_eff_rank": _effective_rank(z1), "z_std": _z_std(u1)}
    if rep is not None:
        out["rep_eff_rank"] = _effective_rank(rep)
    values = torch.stack([v.double() for v in out.values()]).tolist()
    return dict(zip(out, values, strict=True))


def is_collapsed(loss: float, reference: float, tolerance: float = 0.02) -> bool:
    """True when ``loss`` is within ``tolerance`` (relative) of ``reference``, the collapse value."""
    return abs(loss - reference) <= tolerance * abs(reference)


# the diagnostics of the global batch use at most this many of its samples (the first ones):
# their cost (an SVD, N x N similarities) stays a small share of the step at any worker count
MAX_ROWS = 1024


def global_diagnostics(zs, rep: torch.Tensor | None = None, max_rows: int = MAX_ROWS
                       ) -> dict[str, float]:
    """``contrastive_diagnostics`` of the global batch (at most ``max_rows`` samples): every
    rank must call it (all-gather).

    zs: the views' projections on this rank, each (B, D) (the first two are the positive pair);
    rep: (B, H) representations of the first view.
    """
    def gather(t: torch.Tensor) -> torch.Tensor:
        return all_gather_nograd(t.detach().contiguous())[:max_rows]

    return contrastive_diagnostics(gather(zs[0]), gather(zs[1]),
                                   None if rep is None else gather(rep))
