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


def pos_top1(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Share of the 2N anchors whose nearest of the other 2N - 1 columns is their positive."""
    u = torch.cat([_unit(z1), _unit(z2)])
    n = z1.shape[0]
    sim = u @ u.T
    sim.fill_diagonal_(float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(sim.device)
    return float((sim.argmax(1) == pos).float().mean())


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """E ||u - u'||^2 over positive pairs (alpha = 2)."""
    return float((_unit(z1) - _unit(z2)).square().sum(1).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E_{i != j} exp(-t ||u_i - u_j||^2) over the rows of one view."""
    u = _unit(z)
    n = u.shape[0]
    if n < 2:
        return float("nan")
    d2 = torch.cdist(u, u).square()
    off = ~torch.eye(n, dtype=torch.bool, device=u.device)
    return float(torch.logsumexp(-t * d2[off], 0) - math.log(off.sum()))


def effective_rank(h: torch.Tensor) -> float:
    """exp(H(p)), p = singular values / their sum, of the centred (N, D) matrix."""
    h = h.detach().float()
    s = torch.linalg.svdvals(h - h.mean(0, keepdim=True))
    total = s.sum()
    if not torch.isfinite(total) or total <= 0:
        return 1.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def z_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the standard deviation of the unit vectors."""
    return float(_unit(z).std(0).mean())


def collapse_value(n: int, keep_positive: bool = True) -> float:
    """NT-Xent of a collapsed projection for a global batch of n samples (2n anchors)."""
    return math.log(2 * n - 1) if keep_positive else math.log(2 * n - 2)


def contrastive_diagnostics(z1: torch.Tensor, z2: torch.Tensor,
                            rep: torch.Tensor | None = None) -> dict[str, float]:
    """Every diagnostic above, by name; ``rep`` (N, H): the representation (before the head),
    whose effective rank is reported as ``rep_eff_rank``."""
    out = {"pos_top1": pos_top1(z1, z2), "alignment": alignment(z1, z2),
           "uniformity": uniformity(z1), "z_eff_rank": effective_rank(z1), "z_std": z_std(z1)}
    if rep is not None:
        out["rep_eff_rank"] = effective_rank(rep)
    return out


def is_collapsed(loss: float, reference: float, tolerance: float = 0.02) -> bool:
    """True when ``loss`` is within ``tolerance`` (relative) of ``reference``, the collapse value."""
    return abs(loss - reference) <= tolerance * abs(reference)


def global_diagnostics(zs, rep: torch.Tensor | None = None) -> dict[str, float]:
    """``contrastive_diagnostics`` of the global batch: every rank must call it (all-gather).

    zs: the views' projections on this rank, each (B, D) (the first two are the positive pair);
    rep: (B, H) representations of the first view.
    """
    def gather(t: torch.Tensor) -> torch.Tensor:
        return all_gather_nograd(t.detach().float().contiguous())

    return contrastive_diagnostics(gather(zs[0]), gather(zs[1]),
                                   None if rep is None else gather(rep))
