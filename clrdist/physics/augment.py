"""Batched jet augmentations on torch tensors, on the tensor's device.

Every augmentation is a function

    f(x: (B, P, 3) float [pT GeV, eta, phi] in the model frame, mask: (B, P) bool,
      generator: torch.Generator | None, strength: float = 1.0, **params) -> (x, mask)

that never modifies its inputs, keeps padding at zero / False (inputs must be zero-padded, as
``to_model_frame`` and every augmentation leave them), draws all randomness from
``generator`` (same seed -> same output) and has no Python loop over jets. ``strength`` scales
the size of every augmentation (for sweeps); 1 gives the published defaults (docs/reference.md).
They are registered by name in ``AUGMENTATIONS`` (``clrdist.physics.registry``; the event
augmentations of ``augment_event`` too, imported here); ``build_view`` turns the config's ordered
list of ``AugmentSpec`` into one ``View``, ``apply_views`` applies several to one batch. On CPU float32 batches the JetCLR steps (rotate,
translate, smear_soft, collinear_split) run in the fused C kernel of ``clrdist.physics.kernel``
unless the backend is "torch" (``set_backend``, ``augment.backend``); same distributions, other
random numbers.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

# augment_event: importing it registers the event augmentations, so every name build_view may
# look up is known once this module is imported.
from clrdist.physics import augment_event, kernel  # noqa: F401
from clrdist.physics.frame import centroid
from clrdist.physics.registry import (
    AUGMENTATIONS,
    Augmentation,
    get_augmentation,
    rand,
    randn,
    register,
    zero_padding,
)

__all__ = ["AUGMENTATIONS", "Augmentation", "register", "get_augmentation", "rotate", "translate",
           "smear_soft", "collinear_split", "drop", "pt_reweight", "subjet_shift", "feature_mask",
           "planar", "BACKENDS", "set_backend", "get_backend", "View", "build_view", "apply_views"]

Step = tuple[Augmentation, dict[str, Any]]  # an augmentation and its parameters


def planar(x: torch.Tensor) -> torch.Tensor:
    """The same (B, P, F) values stored feature-major (strides (F P, 1, P)): every x[..., k] is a
    contiguous (B, P) plane, which makes per-feature arithmetic faster."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


# ---- slot-major working copy -------------------------------------------------------------------
#
# The JetCLR augmentations (rotate, translate, smear_soft, collinear_split) run on a slot-major
# copy of the batch, S = x.permute(2, 1, 0): (F, P, B), so that every feature of every slot is a
# contiguous row of B jets. Per-jet constants (angles, centroids, shifts) broadcast along those
# rows, and reductions over a jet's slots (centroid, peak-to-peak) are sums / maxima of rows,
# which vectorise; the mask is carried as 0/1 numbers (multiplying by it is much cheaper than
# torch.where on a boolean mask). A view converts once in and once out and chains the steps on the copy; a single
# augmentation call does the same for one step, so a view equals its steps called in turn.

@functools.lru_cache(maxsize=64)
def _slots(P: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(P, 1) slot indices 0..P-1 in ``dtype`` (cached: views call this every step)."""
    return torch.arange(P, device=device, dtype=dtype)[:, None]


class _Jets:
    """S (F, P, B) slot-major values; n (B,) multiplicities (float32 or wider); m (W, B) the mask as
    0/1 over the first W slots (W = P, or for compact masks the batch's largest multiplicity:
    slots beyond it are padding and are left alone); compact: every mask is a prefix (real slots
    first), as the data pipeline and every augmentation here produce."""

    __slots__ = ("S", "n", "_m", "compact", "W", "fixed")

    def __init__(self, x: torch.Tensor, mask: torch.Tensor, reps: int = 1, fixed: bool = False):
        self.fixed = fixed  # fixed slots: no host read of the data (GPU-shaped; see View)
        self.load(x, mask, reps)

    def load(self, x: torch.Tensor, mask: torch.Tensor, reps: int = 1) -> None:
        B, P = mask.shape
        S = x.permute(2, 1, 0).contiguous()
        self.S = S.repeat(1, 1, reps) if reps > 1 else S
        # counts (and the 0/1 mask) in at least float32: exact integers for any P
        n = mask.sum(1).to(torch.promote_types(x.dtype, torch.float32))
        # a prefix mask never has a real slot right after an empty one (fixed slots: not asked,
        # every step then works on all P slots with the mask as given)
        self.compact = not self.fixed and bool(
            B == 0 or P < 2 or not (mask[:, 1:] > mask[:, :-1]).any())
        self.n = n.repeat(reps) if reps > 1 else n
        self._m = None
        if self.compact:
            self.W = int(n.max()) if B else 0
        else:
            self.W = P
            M = mask.T
            self._m = (M.repeat(1, reps) if reps > 1 else M).to(n.dtype)

    @property
    def m(self) -> torch.Tensor:
        if self._m is None:  # compact: slot j of jet b is real iff j < n_b (made when needed)
            self._m = (self.n - _slots(self.S.shape[1], self.n.device, self.n.dtype)[: self.W]).clamp_(0, 1)
        return self._m

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (x (B, P, F) contiguous, mask (B, P) bool)."""
        x = self.S.permute(2, 1, 0).contiguous()
        P = self.S.shape[1]
        if self.compact:
            return x, _slots(P, x.device, self.n.dtype).T < self.n[:, None]
        mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        mask[:, : self.W] = self.m.T > 0
        return x, mask

    def set_compact(self, n: torch.Tensor) -> None:
        """New multiplicities of a compact batch."""
        self.n, self._m = n, None
        self.W = int(n.max()) if n.numel() else 0


def _rotate(st: _Jets, gen: torch.Generator | None, strength: float = 1.0) -> None:
    S, m, W = st.S, st.m, st.W
    pt, C = S[0, :W], S[1:3, :W]  # (W, B), (2, W, B)
    angle = rand(S.shape[2], S, gen).sub_(0.5).mul_(2 * math.pi * strength)
    c, s = torch.cos(angle), torch.sin(angle)
    # (eta, phi) -> R (eta, phi) + (1 - R) centroid on real slots: rows of R are A = (c, s)
    # (the eta coefficients of eta', phi') and Bc = (-s, c) (the phi coefficients)
    cen = torch.linalg.vecdot(C, pt, dim=1).div_(pt.sum(0).clamp_min_(torch.finfo(S.dtype).tiny))
    A, Bc = torch.stack([c, s]), torch.stack([-s, c])
    b = torch.addcmul(cen, A, cen[:1], value=-1).addcmul_(Bc, cen[1:], value=-1)
    out = torch.mul(C[:1], A[:, None])
    out.addcmul_(C[1:], Bc[:, None]).addcmul_(m, b[:, None])
    C.copy_(out)


def _smear_soft(st: _Jets, gen: torch.Generator | None, strength: float = 1.0,
                lambda_soft: float = 0.1, pt_clip_min: float = 0.1) -> None:
    S, m, W = st.S, st.m, st.W
    inv = torch.div(m, S[0, :W].clamp_min(pt_clip_min))  # 1 / max(pT, clip), 0 on padding
    noise = randn((2, W, S.shape[2]), S, gen)
    S[1:3, :W].addcmul_(noise, inv, value=lambda_soft * strength)


def _translate(st: _Jets, gen: torch.Generator | None, strength: float = 1.0,
               width: float = 1.0) -> None:
    S, m, W = st.S, st.m, st.W
    if W == 0:
        return
    C = S[1:3, :W]
    # peak-to-peak over real slots: padding pushed far below / above for the max / min
    big = torch.finfo(S.dtype).max / 4
    pad = 1 - m
    ptp = torch.add(C, pad, alpha=-big).amax(1).sub_(torch.add(C, pad, alpha=big).amin(1)).clamp_min_(0)
    shift = rand((2, S.shape[2]), S, gen).sub_(0.5).mul_(ptp).mul_(2 * width * strength)
    C.addcmul_(m, shift[:, None])


def _split_counts(n: torch.Tensor, P: int, strength: float, fill: float) -> torch.Tensor:
    """Splits per jet: k = max(n, fill P) - n (x strength), at most n and the P - n empty slots."""
    k = (int(fill * P) - n).clamp_min_(0)
    if strength != 1.0:
        k = torch.round(k * strength).to(n.dtype).clamp_min_(0)
    return torch.minimum(k, torch.minimum(n, P - n))


def _collinear_split(st: _Jets, gen: torch.Generator | None, strength: float = 1.0,
                     fill: float = 0.5) -> None:
    if st.fixed:  # fixed slots: every jet, a fixed number of candidate splits
        x, mask = _collinear_split_fixed(*st.batch(), gen, strength, fill)
        st.load(x, mask)
        return
    if not st.compact:  # masks with holes: the general form on the (B, P, F) batch
        x, mask = _collinear_split_batch(*st.batch(), gen, strength, fill)
        st.load(x, mask)
        return
    S, n = st.S, st.n
    F, P, B = S.shape
    k = _split_counts(n, P, strength, fill)
    kmax = int(k.max()) if B else 0
    if kmax == 0:
        return
    # Work on the jets that get at least one split (most jets with n >= fill * P get none),
    # addressing their slots in the flat (F, P * B) values: no copy of those jets is made.
    rows = (k > 0).nonzero().squeeze(1)
    ns, ks = n[rows], k[rows]
    b = rows.shape[0]
    # k distinct random real constituents: the k largest of uniform keys, real slots raised by 2.
    # Jets that split have n < fill * P real slots, so keys are drawn for those slots only (in
    # float32 or wider, so that half-precision batches do not get ties).
    Wk = min(int(fill * P), P)
    j = _slots(P, n.device, n.dtype).T  # (1, P)
    keys = rand((b, Wk), n, gen).add_((ns[:, None] - j[:, :Wk]).clamp_(0, 1), alpha=2)
    src = keys.topk(kmax, dim=1).indices.mul_(B).add_(rows[:, None])  # (b, kmax) flat slot index
    r = rand((b, kmax), S, gen)
    active = (ks[:, None] - j[:, :kmax]).clamp_(0, 1)  # 1 for the first k_b splits of a jet
    flat = S.view(F, P * B)
    # child j: the source's features with (1 - r) of its pT, all zero for inactive j
    child = flat.gather(1, src.view(1, -1).expand(F, -1)).view(F, b, kmax)
    pts = child[0].clone()
    child[0].mul_(torch.addcmul(active, active, r, value=-1))
    child[1:].mul_(active)
    flat[0].scatter_(0, src.view(-1), (pts - child[0]).view(-1))  # the source keeps r pT
    # ... and child j goes to slot n + j (empty: the mask is a prefix); inactive children are
    # zeros added to a padding slot (or to slot P - 1), which changes nothing
    dest = (ns[:, None] + j[:, :kmax]).clamp_(max=P - 1).long().mul_(B).add_(rows[:, None])
    flat.scatter_add_(1, dest.view(1, -1).expand(F, -1), child.view(F, -1))
    st.set_compact(n + k)


# ---- the JetCLR augmentations ------------------------------------------------------------------

def _on_batch(fn: Augmentation, x: torch.Tensor, mask: torch.Tensor,
              generator: torch.Generator | None, strength: float, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """One JetCLR augmentation called alone: the code path of a one-step view."""
    return _run_steps([(fn, params)], strength, x, mask, generator)


@register("rotate")
def rotate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
           strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each jet in the (eta, phi) plane about its pT-weighted centroid.

    Angle ~ U(-pi s, pi s) with s = strength (s = 1: uniform over the circle, i.e. U(0, 2 pi)).
    Conserves pT, the centroid and all pairwise distances.
    """
    return _on_batch(rotate, x, mask, generator, strength)


@register("translate")
def translate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
              strength: float = 1.0, width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift eta and phi of each jet by U(-w r, w r), w = width * strength, r = the peak-to-peak
    range of that coordinate over the jet's real constituents (padding excluded).
    """
    return _on_batch(translate, x, mask, generator, strength, width=width)


@register("smear_soft")
def smear_soft(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
               strength: float = 1.0, lambda_soft: float = 0.1,
               pt_clip_min: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft smearing: eta' ~ N(eta, L / pT), phi' ~ N(phi, L / pT), L = lambda_soft * strength
    (GeV, default 0.1), pT clipped below at ``pt_clip_min`` GeV. pT is unchanged.
    """
    return _on_batch(smear_soft, x, mask, generator, strength,
                     lambda_soft=lambda_soft, pt_clip_min=pt_clip_min)


@register("collinear_split")
def collinear_split(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                    strength: float = 1.0, fill: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Collinear splitting into empty slots: a constituent (pT, eta, phi) becomes (r pT, eta, phi)
    and ((1 - r) pT, eta, phi), r ~ U(0, 1); each constituent is split at most once.

    As in the public JetCLR code, a jet with n real constituents gets k = max(n, fill * P) - n
    splits (so slots fill up to max(n, fill * P)), limited by n and by the empty slots; strength
    scales k. Conserves the 4-momentum sum, the centroid and the (eta, phi) occupancy.
    """
    return _on_batch(collinear_split, x, mask, generator, strength, fill=fill)


def _collinear_split_batch(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
                           strength: float, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """collinear_split for masks with holes: children go to the j-th empty slot in index order."""
    B, P = mask.shape
    n = mask.sum(1)
    k = _split_counts(n, P, strength, fill)
    kmax = int(k.max()) if B else 0
    if kmax == 0:
        return x, mask
    rows = (k > 0).nonzero().squeeze(1)
    xs, ms, ks = x[rows], mask[rows], k[rows]
    b, F = xs.shape[0], xs.shape[-1]
    # k distinct random real constituents: the k largest of uniform keys (padding keyed -1; k <= n)
    keys = torch.where(ms, rand((b, P), x, generator), torch.full((), -1.0, dtype=x.dtype, device=x.device))
    src = keys.topk(kmax, dim=1).indices  # (b, kmax)
    r = rand((b, kmax), x, generator)
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


def _collinear_split_fixed(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
                           strength: float, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """collinear_split with shapes fixed by (B, P) alone (no host read: GPU-shaped).

    Every jet draws K = the largest possible number of splits (k <= min(n, P - n, fill P)); the
    first k_b are applied. The j-th split of a jet goes to its j-th empty slot (a cumulative sum
    over the empty slots, so masks with holes work too): the same distribution as the compact
    form, where those slots are n, n + 1, ...
    """
    B, P = mask.shape
    K = P // 2 if strength > 1.0 else min(int(fill * P), P // 2)
    if K <= 0 or B == 0:
        return x, mask
    F = x.shape[-1]
    k = _split_counts(mask.sum(1), P, strength, fill)  # (B,) int64
    # k distinct random real constituents: the K largest of uniform keys, padding keyed -1 (the
    # first k_b <= n_b of them are real)
    keys = torch.where(mask, rand((B, P), x, generator), torch.full((), -1.0, dtype=x.dtype, device=x.device))
    src = keys.topk(K, dim=1).indices  # (B, K)
    r = rand((B, K), x, generator)
    active = torch.arange(K, device=x.device)[None, :] < k[:, None]
    # the source keeps r pT ...
    r_src = torch.where(active, r, torch.ones_like(r))
    out = x.clone()
    out[..., 0] = x[..., 0] * torch.ones_like(keys).scatter(1, src, r_src)
    # ... and the j-th empty slot receives (1 - r_j) pT at the source's (eta, phi, ...)
    child = x.gather(1, src.unsqueeze(-1).expand(-1, -1, F))
    child = torch.cat([child[..., :1] * (1 - r_src).unsqueeze(-1), child[..., 1:]], -1)
    empty = ~mask
    erank = empty.cumsum(1) - 1
    fill_slot = empty & (erank < k[:, None])
    moved = child.gather(1, erank.clamp(0, K - 1).unsqueeze(-1).expand(-1, -1, F))
    return torch.where(fill_slot.unsqueeze(-1), moved, out), mask | fill_slot


# Augmentations with a slot-major form, chained on one working copy inside a view.
_SLOT_MAJOR: dict[Augmentation, Callable[..., None]] = {
    rotate: _rotate, translate: _translate, smear_soft: _smear_soft, collinear_split: _collinear_split,
}


# ---- further jet augmentations (DarkCLR anomaly view, substructure variations) ------------------

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


# ---- backends: the fused CPU kernel or torch ops ----------------------------------------------

BACKENDS = ("auto", "torch", "kernel")


def _checked(name: str, source: str = "augmentation backend") -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} {name!r}: expected one of {', '.join(BACKENDS)}")
    return name


_backend = _checked(os.environ.get("CLRDIST_AUGMENT_BACKEND", "auto"), "$CLRDIST_AUGMENT_BACKEND")
_warned_unavailable = False


def set_backend(name: str) -> str:
    """Process-wide default backend of the JetCLR augmentations; returns the previous one.

    "kernel": the fused C kernel (clrdist.physics.kernel) for CPU float32 batches, an error if it
    cannot be built; "torch": torch ops always; "auto" (default, or $CLRDIST_AUGMENT_BACKEND):
    the kernel where it applies and builds, torch otherwise (with one warning if it does not
    build). GPU and other-dtype batches always take the torch path. The two backends draw
    different random numbers from the same generator; the distributions are the same.
    """
    global _backend
    previous, _backend = _backend, _checked(name)
    return previous


def get_backend() -> str:
    """The process-wide default backend (see ``set_backend``)."""
    return _backend


def _use_kernel(x: torch.Tensor, mask: torch.Tensor, backend: str | None) -> bool:
    global _warned_unavailable
    backend = backend or _backend  # validated by set_backend / build_view
    if backend == "torch" or not kernel.supports(x, mask):
        return False
    try:
        kernel.require()
    except kernel.KernelUnavailable as e:
        if backend == "kernel":
            raise
        if not _warned_unavailable:
            _warned_unavailable = True
            warnings.warn(f"{e}\nclrdist: using the (slower) torch augmentations", RuntimeWarning,
                          stacklevel=3)
        return False
    return True


@functools.cache
def _defaults(fn: Augmentation) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _kernel_step(fn: Augmentation, params: dict[str, Any]) -> tuple[str, tuple[float, ...]]:
    """(kernel op name, its parameters in the kernel's order, defaults filled in)."""
    name = fn.__name__
    names = kernel.OPS[name][1]
    for k in params:
        if k not in names:
            raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
    defaults = _defaults(fn)
    return name, tuple(float(params.get(k, defaults[k])) for k in names)


def _run_steps(steps: Sequence[Step], strength: float,
               x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
               reps: int = 1, backend: str | None = None,
               programs: dict[tuple[int, int], kernel.Program] | None = None,
               fixed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply steps in order to the batch repeated ``reps`` times. Consecutive JetCLR steps run as
    one fused kernel call (CPU float32; ``programs`` caches their kernel programs by step range)
    or share one slot-major working copy (torch); the others run on the (B, P, F) batch,
    feature-planar on the CPU. ``fixed`` (None: on every device but the CPU): fixed slots, no
    host read of the data (the fused kernel is then not used)."""
    if fixed is None:
        fixed = x.device.type != "cpu"
    st: _Jets | None = None
    i = 0
    while i < len(steps):
        fn, params = steps[i]
        fast = _SLOT_MAJOR.get(fn)
        if fast is not None:
            if st is None and not fixed and _use_kernel(x, mask, backend):
                j = i
                while j < len(steps) and steps[j][0] in _SLOT_MAJOR:
                    j += 1
                prog = programs.get((i, j)) if programs is not None else None
                if prog is None:
                    prog = kernel.Program([_kernel_step(f, p) for f, p in steps[i:j]])
                    if programs is not None:
                        programs[(i, j)] = prog
                x, mask = kernel.run(prog, strength, x, mask, generator, reps)
                reps, i = 1, j
                continue
            if st is None:
                st, reps = _Jets(x, mask, reps, fixed), 1
            fast(st, generator, strength=strength, **params)
            i += 1
            continue
        if st is not None:
            (x, mask), st = st.batch(), None
        if reps > 1:
            x, mask, reps = x.repeat(reps, *([1] * (x.dim() - 1))), mask.repeat(reps, 1), 1
        j = i
        while j < len(steps) and steps[j][0] not in _SLOT_MAJOR:
            j += 1
        if j - i > 1 and x.is_contiguous() and x.device.type == "cpu":
            x = planar(x)  # one copy; the steps then work on contiguous feature planes
        for fn, params in steps[i:j]:
            x, mask = fn(x, mask, generator, strength=strength, **params)
        i = j
    if st is not None:
        return st.batch()
    if reps > 1:
        x, mask = x.repeat(reps, *([1] * (x.dim() - 1))), mask.repeat(reps, 1)
    return x.contiguous(), mask


class View:
    """An ordered list of augmentations applied as one: ``view(x, mask, generator) -> (x, mask)``.

    ``steps`` ((augmentation, params) in order), ``strength``, ``backend`` and ``fixed`` say
    what it does; views with the same four are interchangeable, which ``apply_views`` uses to
    fuse them. Made by ``build_view``, which checks names and parameters.

    ``fixed``: work on fixed slots, with no operation whose output shape depends on the data
    and no read of the data on the host (what a GPU needs: no host sync per step). None (default):
    fixed on every device but the CPU, where trimming to the batch's longest jet is faster.
    """

    __slots__ = ("steps", "strength", "backend", "fixed", "_programs")

    def __init__(self, steps: Sequence[Step], strength: float = 1.0, backend: str | None = None,
                 fixed: bool | None = None):
        self.steps: tuple[Step, ...] = tuple((fn, dict(params)) for fn, params in steps)
        self.strength = strength
        self.backend = backend
        self.fixed = fixed
        self._programs: dict[tuple[int, int], kernel.Program] = {}  # fused kernel programs

    @property
    def key(self) -> tuple[Any, ...]:
        """Equal keys: the same augmentations, parameters, strength, backend and slot mode."""
        return self.steps, self.strength, self.backend, self.fixed

    def __call__(self, x: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, P, F) [pT GeV, eta, phi, ...], mask (B, P) bool -> the augmented (x, mask)."""
        return _run_steps(self.steps, self.strength, x, mask, generator, backend=self.backend,
                          programs=self._programs, fixed=self.fixed)

    def repeated(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
                 reps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The view of the batch repeated ``reps`` times: (reps B, P, F), (reps B, P); every row
        draws its own randomness."""
        return _run_steps(self.steps, self.strength, x, mask, generator, reps, self.backend,
                          self._programs, self.fixed)

    def __repr__(self) -> str:
        names = ", ".join(fn.__name__ for fn, _ in self.steps)
        return f"View([{names}], strength={self.strength}, backend={self.backend}, fixed={self.fixed})"


def build_view(specs: Sequence[Any], strength: float = 1.0, backend: str | None = None,
               fixed: bool | None = None) -> View:
    """Ordered list of specs (objects with ``.name`` and ``.params``, e.g. config.AugmentSpec,
    or dicts with those keys) -> a ``View``: callable(x, mask, generator) -> (x, mask).

    Unknown names fail here, at build time, with a KeyError listing the known names. The view
    gives exactly what calling its augmentations in turn with the same generator gives (on the
    same backend). ``backend`` ("auto", "torch", "kernel"; None: the process default, see
    ``set_backend``) picks how the JetCLR steps run; ``fixed`` (see ``View``) whether they
    work on fixed slots.
    """
    if backend is not None:
        _checked(backend)
    steps: list[Step] = []
    for spec in specs:
        name = spec["name"] if isinstance(spec, dict) else spec.name
        params = (spec.get("params") or {}) if isinstance(spec, dict) else dict(spec.params or {})
        fn = get_augmentation(name)
        if "strength" in params:
            raise TypeError(f"augmentation {name!r}: 'strength' is set for all augmentations at once "
                            "(augment.strength), not per augmentation")
        try:  # unknown or missing parameters fail here too, not at the first batch
            inspect.signature(fn).bind(None, None, None, **params)
        except TypeError as e:
            raise TypeError(f"augmentation {name!r}: {e}") from None
        steps.append((fn, dict(params)))
    return View(steps, strength, backend, fixed)


def apply_views(views: Sequence[Callable[..., tuple[torch.Tensor, torch.Tensor]]], x: torch.Tensor,
                mask: torch.Tensor, generator: torch.Generator | None = None,
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every view of the same batch: [(x_v, mask_v) for v in views].

    Consecutive ``View``s with equal keys (same specs, strength, backend) are computed in ONE call
    on the batch repeated that many times (same distribution: every row draws its own
    randomness), which halves the per-call overhead of the usual two-identical-views set-up.
    Other callables ``(x, mask, generator) -> (x, mask)`` are called one by one.
    """
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    i = 0
    while i < len(views):
        j = i + 1
        first = views[i]
        if isinstance(first, View):
            while j < len(views) and isinstance(views[j], View) and views[j].key == first.key:
                j += 1
        k = j - i
        if k == 1:
            out.append(first(x, mask, generator))
        else:
            xs, ms = first.repeated(x, mask, generator, k)
            out.extend(zip(xs.view(k, *x.shape).unbind(0), ms.view(k, *mask.shape).unbind(0),
                           strict=True))
        i = j
    return out
