"""Further jet augmentations (DarkCLR's anomaly view, substructure variations): ``drop``,
``pt_reweight``, ``subjet_shift``, ``feature_mask``. Same signature and rules as the JetCLR ones
(``clrdist.physics.augment``), registered in the same registry; they work on the (B, P, F) batch
with fixed shapes (masks, gathers, argsort), on any device.
"""

from __future__ import annotations

import math

import torch

from clrdist.physics.frame import centroid
from clrdist.physics.registry import rand, register, zero_padding

__all__ = ["drop", "pt_reweight", "subjet_shift", "feature_mask"]

def _recentre(x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift eta, phi so the pT-weighted centroid is ``target`` (B, 2)."""
    out = x.clone()
    out[..., 1:3] = x[..., 1:3] + (target - centroid(x, mask))[:, None, :]
    return zero_padding(out, mask)


def _compact(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move real constituents to the front, keeping their order (padding trails)."""
    order = (~mask).to(torch.int8).argsort(dim=1, stable=True)
    return x.gather(1, order.unsqueeze(-1).expand_as(x)), mask.gather(1, order)


@register("drop")
def drop(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
         strength: float = 1.0, p: float = 0.3, keep_pt: bool = True,
         recentre: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each real constituent with probability p * strength (DarkCLR anomaly view: p = 0.3),
    never the hardest one, so every non-empty jet keeps at least one. With ``keep_pt`` the survivors'
    pT is scaled to keep the jet's total pT; with ``recentre`` the pT-weighted centroid is moved
    back to where it was. Survivors are compacted to the front in their original order.
    """
    B, P = mask.shape
    prob = min(max(p * strength, 0.0), 1.0)
    lead = torch.where(mask, x[..., 0], torch.full_like(x[..., 0], -1.0)).argmax(1, keepdim=True)
    is_lead = torch.zeros_like(mask).scatter(1, lead, True)
    keep = mask & ((rand((B, P), x, generator) >= prob) | is_lead)
    pt = x[..., 0]
    out = x.clone()
    if keep_pt:
        before = (pt * mask).sum(1, keepdim=True)
        after = (pt * keep).sum(1, keepdim=True)
        out[..., 0] = pt * (before / after.clamp_min(torch.finfo(x.dtype).tiny))
    out = zero_padding(out, keep)
    if recentre:
        out = _recentre(out, keep, centroid(x, mask))
    return _compact(out, keep)


@register("pt_reweight")
def pt_reweight(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                strength: float = 1.0, beta: float = 0.5, width: float = 0.0,
                recentre: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """pT re-weighting: pT_i -> S pT_i^b / sum_j pT_j^b, S the jet's total pT (kept), with
    b = 1 + (beta - 1) * strength + U(-width, width) * strength per jet (b = 1: identity).
    Ordering by pT is preserved; with ``recentre`` the centroid is moved back.
    """
    B = x.shape[0]
    b = 1 + (beta - 1) * strength + (2 * rand((B, 1), x, generator) - 1) * width * strength
    pt = x[..., 0]
    logpt = torch.log(pt.clamp_min(torch.finfo(x.dtype).tiny))
    # normalise in log space (stable for large b): w_i = exp(b log pT_i - max)
    lw = torch.where(mask, b * logpt, torch.full_like(pt, float("-inf")))
    lw = lw - lw.amax(1, keepdim=True).clamp_min(-1e30)
    w = torch.where(mask, torch.exp(lw), torch.zeros_like(pt))
    total = (pt * mask).sum(1, keepdim=True)
    out = x.clone()
    out[..., 0] = total * w / w.sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    out = zero_padding(out, mask)
    if recentre:
        out = _recentre(out, mask, centroid(x, mask))
    return out, mask


@register("subjet_shift")
def subjet_shift(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                 strength: float = 1.0, radius: float = 0.2, shift: float = 0.1,
                 recentre: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Move one subjet: a seed constituent drawn with probability proportional to pT, every real
    constituent within Delta R < radius of it moves rigidly by a distance U(0, shift * strength)
    in a random direction. pT and multiplicity are kept; distances inside the subjet and inside
    the rest are kept.
    """
    B, P = mask.shape
    w = torch.where(mask, x[..., 0].clamp_min(0), torch.zeros_like(x[..., 0]))
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    seed = torch.multinomial(w, 1, generator=generator)  # (B, 1)
    centre = x[..., 1:3].gather(1, seed.unsqueeze(-1).expand(-1, -1, 2))  # (B, 1, 2)
    inside = mask & ((x[..., 1:3] - centre).square().sum(-1) < radius**2)
    r = rand((B, 1), x, generator) * shift * strength
    a = rand((B, 1), x, generator) * 2 * math.pi
    d = torch.stack([r * torch.cos(a), r * torch.sin(a)], -1)  # (B, 1, 2)
    out = x.clone()
    out[..., 1:3] = x[..., 1:3] + d * inside.unsqueeze(-1)
    out = zero_padding(out, mask)
    if recentre:
        out = _recentre(out, mask, centroid(x, mask))
    return out, mask


@register("feature_mask")
def feature_mask(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                 strength: float = 1.0, p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive masking (Metzger et al.): every feature of every slot zeroed with probability
    p * strength. The mask is unchanged (a masked object is still an object, its values hidden).
    """
    prob = min(max(p * strength, 0.0), 1.0)
    keep = rand(x.shape, x, generator) >= prob
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask
