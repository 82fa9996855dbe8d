"""The slot-major working copy of a jet batch and the JetCLR steps on it (the torch backend).

The JetCLR augmentations (rotate, translate, smear_soft, collinear_split) run on a slot-major
copy of the batch, S = x.permute(2, 1, 0): (F, P, B); ``clrdist.physics.augment`` chains them
inside a view (its ``_run_steps``) and registers the public functions. Every step here modifies
the working copy in place and draws its randomness from the generator on the data's device.
"""

from __future__ import annotations

import functools
import math

import torch

from clrdist.physics.registry import rand, randn

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
