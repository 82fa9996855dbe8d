"""Batched jet augmentations on torch tensors, on the tensor's device.

Every augmentation is a function

    f(x: (B, P, 3) float [pT GeV, eta, phi] in the model frame, mask: (B, P) bool,
      generator: torch.Generator | None, strength: float = 1.0, **params) -> (x, mask)

that never modifies its inputs, keeps padding at zero / False (inputs must be zero-padded, as
``to_model_frame`` and every augmentation leave them), draws all randomness from
``generator`` (same seed -> same output) and has no Python loop over jets. ``strength`` scales
the size of every augmentation (for sweeps); 1 gives the published defaults (REFERENCE.md).
They are registered by name in ``AUGMENTATIONS``; ``build_view`` turns the config's ordered
list of ``AugmentSpec`` into one callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from clrdist.physics.frame import centroid

Augmentation = Callable[..., tuple[torch.Tensor, torch.Tensor]]
View = Callable[[torch.Tensor, torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]

AUGMENTATIONS: dict[str, Augmentation] = {}


def register(name: str) -> Callable[[Augmentation], Augmentation]:
    def deco(fn: Augmentation) -> Augmentation:
        if name in AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} registered twice")
        AUGMENTATIONS[name] = fn
        return fn
    return deco


# ---- random helpers (all draws through the generator, on x's device) -------------------------

def _rand(shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype)


def _randn(shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)


def _zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _stack(x: torch.Tensor, eta_phi: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x with columns 1, 2 replaced by the (B, P) planes eta_phi (other columns kept), in x's
    memory layout (so a feature-planar batch, see ``build_view``, stays planar)."""
    out = torch.empty_like(x)
    out[..., 0] = x[..., 0]
    out[..., 1] = eta_phi[0]
    out[..., 2] = eta_phi[1]
    if x.shape[-1] > 3:
        out[..., 3:] = x[..., 3:]
    return out


def planar(x: torch.Tensor) -> torch.Tensor:
    """The same (B, P, F) values stored feature-major (strides (F P, 1, P)): every x[..., k] is a
    contiguous (B, P) plane, which makes the per-feature arithmetic of the augmentations faster."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def _centroid_planes(w: torch.Tensor, eta: torch.Tensor, phi: torch.Tensor):
    """pT-weighted centroid (B, 1), (B, 1) from masked weights w (B, P); rows without pT: 0."""
    ws = w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return (w * eta).sum(1, keepdim=True) / ws, (w * phi).sum(1, keepdim=True) / ws


# ---- the JetCLR augmentations ------------------------------------------------------------------

@register("rotate")
def rotate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
           strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each jet in the (eta, phi) plane about its pT-weighted centroid.

    Angle ~ U(-pi s, pi s) with s = strength (s = 1: uniform over the circle, i.e. U(0, 2 pi)).
    Conserves pT, the centroid and all pairwise distances.
    """
    B = x.shape[0]
    angle = (2 * _rand((B, 1), x, generator) - 1) * (math.pi * strength)
    c, s = torch.cos(angle), torch.sin(angle)
    pt, eta, phi = x[..., 0], x[..., 1], x[..., 2]
    m = mask.to(x.dtype)
    ce, cp = _centroid_planes(pt * m, eta, phi)
    deta, dphi = eta - ce, phi - cp
    return _stack(x, ((ce + c * deta - s * dphi) * m, (cp + s * deta + c * dphi) * m)), mask


@register("translate")
def translate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
              strength: float = 1.0, width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift eta and phi of each jet by U(-w r, w r), w = width * strength, r = the peak-to-peak
    range of that coordinate over the jet's real constituents (padding excluded).
    """
    B = x.shape[0]
    c = x.transpose(1, 2)[:, 1:3]  # (B, 2, P) eta, phi; contiguous rows for a planar batch
    # Peak-to-peak over real slots: padding takes the value of the row's first real slot, so one
    # aminmax gives both ends (an empty row is all zeros: range 0).
    first = mask.to(torch.int8).argmax(1).view(B, 1, 1).expand(B, 2, 1)
    lo, hi = torch.aminmax(torch.where(mask[:, None, :], c, c.gather(2, first)), dim=2)
    shift = (2 * _rand((B, 2), x, generator) - 1) * (width * strength) * (hi - lo)
    out = torch.empty_like(x)
    out[..., 0] = x[..., 0]
    out.transpose(1, 2)[:, 1:3] = c + shift[:, :, None] * mask[:, None, :]
    if x.shape[-1] > 3:
        out[..., 3:] = x[..., 3:]
    return out, mask


@register("smear_soft")
def smear_soft(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
               strength: float = 1.0, lambda_soft: float = 0.1,
               pt_clip_min: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft smearing: eta' ~ N(eta, L / pT), phi' ~ N(phi, L / pT), L = lambda_soft * strength
    (GeV, default 0.1), pT clipped below at ``pt_clip_min`` GeV. pT is unchanged.
    """
    sigma = (lambda_soft * strength) * mask / x[..., 0].clamp_min(pt_clip_min)  # (B, P), 0 on padding
    noise = _randn((2,) + x.shape[:2], x, generator)
    return _stack(x, (x[..., 1] + sigma * noise[0], x[..., 2] + sigma * noise[1])), mask


@register("collinear_split")
def collinear_split(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                    strength: float = 1.0, fill: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Collinear splitting into empty slots: a constituent (pT, eta, phi) becomes (r pT, eta, phi)
    and ((1 - r) pT, eta, phi), r ~ U(0, 1); each constituent is split at most once.

    As in the public JetCLR code, a jet with n real constituents gets k = max(n, fill * P) - n
    splits (so slots fill up to max(n, fill * P)), limited by n and by the empty slots; strength
    scales k. Conserves the 4-momentum sum, the centroid and the (eta, phi) occupancy.
    """
    B, P = mask.shape
    n = mask.sum(1)
    k = torch.clamp(n, min=int(fill * P)) - n
    if strength != 1.0:
        k = torch.round(k.to(x.dtype) * strength).to(n.dtype).clamp_min(0)
    k = torch.minimum(torch.minimum(k, n), P - n)
    kmax = int(k.max()) if B else 0
    if kmax == 0:
        return x, mask
    # Work on the jets that get at least one split (most jets with n >= fill * P get none).
    rows = (k > 0).nonzero().squeeze(1)
    xs, ms, ks = x[rows], mask[rows], k[rows]
    b, F = xs.shape[0], xs.shape[-1]
    # k distinct random real constituents: the k largest of uniform keys (padding keyed -1; k <= n)
    keys = torch.where(ms, _rand((b, P), x, generator), torch.full((), -1.0, dtype=x.dtype, device=x.device))
    src = keys.topk(kmax, dim=1).indices  # (b, kmax)
    r = _rand((b, kmax), x, generator)
    active = torch.arange(kmax, device=x.device)[None, :] < ks[:, None]
    # the source keeps r pT ...
    factor = torch.ones_like(keys).scatter(1, src, torch.where(active, r, torch.ones_like(r)))
    out_s = xs.clone()
    out_s[..., 0] = xs[..., 0] * factor
    # ... and the j-th empty slot (in index order) receives (1 - r_j) pT at the same (eta, phi)
    child = xs.gather(1, src.unsqueeze(-1).expand(-1, -1, F)).clone()
    child[..., 0] = child[..., 0] * (1 - r)
    empty = ~ms
    erank = empty.cumsum(1) - 1
    fill_slot = empty & (erank < ks[:, None])
    moved = child.gather(1, erank.clamp(0, kmax - 1).unsqueeze(-1).expand(-1, -1, F))
    out_s = torch.where(fill_slot.unsqueeze(-1), moved, out_s)
    out, new_mask = x.clone(), mask.clone()
    out[rows] = out_s
    new_mask[rows] = ms | fill_slot
    return out, new_mask


# ---- further jet augmentations (DarkCLR anomaly view, substructure variations) ------------------

def _recentre(x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift eta, phi so the pT-weighted centroid is ``target`` (B, 2)."""
    out = x.clone()
    out[..., 1:3] = x[..., 1:3] + (target - centroid(x, mask))[:, None, :]
    return _zero_padding(out, mask)


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
    keep = mask & ((_rand((B, P), x, generator) >= prob) | is_lead)
    pt = x[..., 0]
    out = x.clone()
    if keep_pt:
        before = (pt * mask).sum(1, keepdim=True)
        after = (pt * keep).sum(1, keepdim=True)
        out[..., 0] = pt * (before / after.clamp_min(torch.finfo(x.dtype).tiny))
    out = _zero_padding(out, keep)
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
    b = 1 + (beta - 1) * strength + (2 * _rand((B, 1), x, generator) - 1) * width * strength
    pt = x[..., 0]
    logpt = torch.log(pt.clamp_min(torch.finfo(x.dtype).tiny))
    # normalise in log space (stable for large b): w_i = exp(b log pT_i - max)
    lw = torch.where(mask, b * logpt, torch.full_like(pt, float("-inf")))
    lw = lw - lw.amax(1, keepdim=True).clamp_min(-1e30)
    w = torch.where(mask, torch.exp(lw), torch.zeros_like(pt))
    total = (pt * mask).sum(1, keepdim=True)
    out = x.clone()
    out[..., 0] = total * w / w.sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    out = _zero_padding(out, mask)
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
    r = _rand((B, 1), x, generator) * shift * strength
    a = _rand((B, 1), x, generator) * 2 * math.pi
    d = torch.stack([r * torch.cos(a), r * torch.sin(a)], -1)  # (B, 1, 2)
    out = x.clone()
    out[..., 1:3] = x[..., 1:3] + d * inside.unsqueeze(-1)
    out = _zero_padding(out, mask)
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
    keep = _rand(x.shape, x, generator) >= prob
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask


# ---- views -------------------------------------------------------------------------------------

def get_augmentation(name: str) -> Augmentation:
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise KeyError(f"unknown augmentation {name!r}; known: {', '.join(sorted(AUGMENTATIONS))}") from None


def build_view(specs: Sequence[Any], strength: float = 1.0) -> View:
    """Ordered list of specs (objects with ``.name`` and ``.params``, e.g. config.AugmentSpec,
    or dicts with those keys) -> callable(x, mask, generator) -> (x, mask).

    Unknown names fail here, at build time, with a KeyError listing the known names.
    """
    steps: list[tuple[Augmentation, dict[str, Any]]] = []
    for spec in specs:
        name = spec["name"] if isinstance(spec, dict) else spec.name
        params = (spec.get("params") or {}) if isinstance(spec, dict) else dict(spec.params or {})
        steps.append((get_augmentation(name), dict(params)))

    def view(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        if len(steps) > 1 and x.is_contiguous() and x.device.type == "cpu":
            x = planar(x)  # one copy in, one out; every step then works on contiguous planes
        for fn, params in steps:
            x, mask = fn(x, mask, generator, strength=strength, **params)
        return x.contiguous(), mask

    view.steps = steps  # type: ignore[attr-defined]
    return view



def apply_views(views: Sequence[View], x: torch.Tensor, mask: torch.Tensor,
                generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every view of the same batch: [(x_v, mask_v) for v in views].

    Consecutive views built from identical specs are computed in ONE call on the batch repeated
    that many times (same distribution: every row draws its own randomness), which halves the
    per-call overhead of the usual two-identical-views set-up.
    """
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    i = 0
    while i < len(views):
        j = i + 1
        key = getattr(views[i], "steps", None)
        while j < len(views) and key is not None and getattr(views[j], "steps", None) == key:
            j += 1
        k = j - i
        if k == 1:
            out.append(views[i](x, mask, generator))
        else:
            xs, ms = views[i](x.repeat(k, *([1] * (x.dim() - 1))), mask.repeat(k, 1), generator)
            out.extend(zip(xs.chunk(k), ms.chunk(k), strict=True))
        i = j
    return out

# Event-level augmentations (ADC2021 layout) register themselves into the same registry.
from clrdist.physics import augment_event as _augment_event  # noqa: E402,F401
