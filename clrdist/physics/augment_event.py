"""Event augmentations for the CMS ADC2021 layout (AnomalyCLR, Metzger et al.).

An event is (B, 19, 3) [pT GeV, eta, phi] in the detector frame (absolute directions) with a
(B, 19) bool mask: row 0 MET (eta = 0), rows 1-4 electrons, 5-8 muons, 9-18 jets, zero padded.
Same signature and rules as the jet augmentations (clrdist.physics.augment), registered in the
same ``AUGMENTATIONS`` registry (clrdist.physics.registry). "Recompute MET" means: MET is minus
the vector sum of the visible objects plus whatever was invisible, so a change of the visible
vector sum by Delta is compensated by MET -> MET - Delta; then the vector sum over all 19 rows
is conserved.

Physical augmentations: ``event_rotate``, ``event_smear`` (pT with sigma = sqrt(0.052 pT^2 +
1.502 pT), eta/phi Gaussian, then acceptance), ``event_acceptance``. Anomaly augmentations:
``event_add_objects``, ``event_split_objects`` (constant total pT and MET), ``event_shift_met``,
``event_shift_pt``. ``feature_mask`` (naive masking) lives with the jet augmentations.
"""

from __future__ import annotations

import functools
import math

import torch

from clrdist.physics.frame import wrap_phi
from clrdist.physics.registry import rand, randn, register, zero_padding

N_OBJECTS = 19
MET, ELECTRON, MUON, JET = 0, 1, 2, 3
# object type of every row of the ADC2021 layout
SLOT_TYPE = torch.tensor([MET] + [ELECTRON] * 4 + [MUON] * 4 + [JET] * 10)
ETA_MAX = {MET: math.inf, ELECTRON: 3.0, MUON: 2.1, JET: 4.0}  # acceptance, |eta| <=
PT_FLOOR = {MET: 0.0, ELECTRON: 3.0, MUON: 3.0, JET: 15.0}  # GeV, minimum object pT


def _check(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[1] != N_OBJECTS or x.shape[2] < 3:
        raise ValueError(f"event augmentations need (B, {N_OBJECTS}, >=3) ADC2021 events, got "
                         f"{tuple(x.shape)}")


_TYPES = SLOT_TYPE.tolist()
_TABLES = {"eta_max": ETA_MAX, "pt_floor": PT_FLOOR}


@functools.lru_cache(maxsize=32)
def _table(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(19,) per-row constants, made once per device (not a host -> device copy per call)."""
    return torch.tensor([_TABLES[name][t] for t in _TYPES], dtype=dtype, device=device)


@functools.lru_cache(maxsize=8)
def _slot_types(device: torch.device) -> torch.Tensor:
    return SLOT_TYPE.to(device)


def _per_slot(table: dict[int, float], x: torch.Tensor) -> torch.Tensor:
    name = "eta_max" if table is ETA_MAX else "pt_floor"
    return _table(name, x.device, x.dtype)


def _objects(x: torch.Tensor) -> torch.Tensor:
    """(19,) bool: the physical-object rows (everything but MET)."""
    return _slot_types(x.device) != MET


def pxpy(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 19, 2) transverse momentum vectors of the real rows (zeros for padding)."""
    v = torch.stack([x[..., 0] * torch.cos(x[..., 2]), x[..., 0] * torch.sin(x[..., 2])], -1)
    return v * mask.unsqueeze(-1)


def _visible(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (pxpy(x, mask) * _objects(x)[None, :, None]).sum(1)


def _with_met(x: torch.Tensor, mask: torch.Tensor, met: torch.Tensor):
    """Write the MET vector (B, 2) into row 0 (eta = 0)."""
    out, m = x.clone(), mask.clone()
    out[:, 0, 0] = met.norm(dim=-1)
    out[:, 0, 1] = 0.0
    out[:, 0, 2] = torch.atan2(met[:, 1], met[:, 0])
    m[:, 0] = m[:, 0] | (out[:, 0, 0] > 0)
    return zero_padding(out, m), m


def _recompute_met(x_old, m_old, x_new, m_new):
    """MET -> MET - (visible_new - visible_old): the all-row vector sum is conserved."""
    met = pxpy(x_old, m_old)[:, 0] - (_visible(x_new, m_new) - _visible(x_old, m_old))
    return _with_met(x_new, m_new, met)


def _acceptance(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    eta_max = _per_slot(ETA_MAX, x)
    return mask & ((x[..., 1].abs() <= eta_max) & (x[..., 0] > 0) | ~_objects(x))


@register("event_rotate")
def event_rotate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                 strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Global azimuthal rotation of every row (MET included), angle U(-pi s, pi s)."""
    _check(x)
    angle = (2 * rand((x.shape[0], 1), x, generator) - 1) * math.pi * strength
    out = x.clone()
    out[..., 2] = wrap_phi(x[..., 2] + angle)
    return zero_padding(out, mask), mask


@register("event_acceptance")
def event_acceptance(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                     strength: float = 1.0, recompute_met: bool = True):
    """Drop objects outside the acceptance (|eta| > 3 electrons, 2.1 muons, 4 jets) or with
    pT <= 0; with ``recompute_met`` their pT goes into MET."""
    _check(x)
    m = _acceptance(x, mask)
    out = zero_padding(x, m)
    return _recompute_met(x, mask, out, m) if recompute_met else (out, m)


@register("event_smear")
def event_smear(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                strength: float = 1.0, pt: bool = True, eta_sigma: float = 0.05,
                phi_sigma: float = 0.05, acceptance: bool = True, recompute_met: bool = True):
    """Detector-like smearing of the objects (not MET):
    pT' ~ N(pT, s * sqrt(0.052 pT^2 + 1.502 pT)) (GeV), eta' ~ N(eta, s * eta_sigma),
    phi' ~ N(phi, s * phi_sigma); objects leaving the acceptance or with pT' <= 0 are dropped
    (``acceptance``); MET absorbs the change of the visible vector sum (``recompute_met``).
    """
    _check(x)
    obj = _objects(x)[None, :] & mask
    noise = randn(x.shape[:2] + (3,), x, generator)
    out = x.clone()
    if pt:
        p = x[..., 0].clamp_min(0)
        sigma = strength * torch.sqrt(0.052 * p * p + 1.502 * p)
        out[..., 0] = torch.where(obj, (p + sigma * noise[..., 0]).clamp_min(0), x[..., 0])
    out[..., 1] = torch.where(obj, x[..., 1] + strength * eta_sigma * noise[..., 1], x[..., 1])
    out[..., 2] = torch.where(obj, wrap_phi(x[..., 2] + strength * phi_sigma * noise[..., 2]), x[..., 2])
    m = _acceptance(out, mask) if acceptance else mask
    out = zero_padding(out, m)
    return _recompute_met(x, mask, out, m) if recompute_met else (out, m)


def _empty_slot_of_type(mask: torch.Tensor, want: torch.Tensor, gen, x) -> torch.Tensor:
    """For each event, a random empty slot among the rows of type want[b] (B,) -> (B,) index,
    -1 where there is none."""
    types = _slot_types(mask.device)
    ok = ~mask & (types[None, :] == want[:, None])
    keys = torch.where(ok, rand(mask.shape, x, gen), torch.full(mask.shape, -1.0, device=x.device, dtype=x.dtype))
    idx = keys.argmax(1)
    return torch.where(ok.any(1), idx, torch.full_like(idx, -1))


@register("event_add_objects")
def event_add_objects(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                      strength: float = 1.0, n: int = 1, pt_max: float = 100.0,
                      recompute_met: bool = True):
    """Anomaly augmentation: add ``round(n * strength)`` objects per event (each of a random type:
    electron, muon or jet) into free slots of that type, pT ~ U(floor, pt_max) GeV (floors 3 GeV
    leptons, 15 GeV jets), eta uniform inside the type's acceptance, phi uniform; MET is
    recomputed. An event with no free slot of the drawn type is left as it is.
    """
    _check(x)
    out, m = x.clone(), mask.clone()
    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    floors, etas = _per_slot(PT_FLOOR, x), _per_slot(ETA_MAX, x)
    for _ in range(int(round(n * strength))):  # a handful of additions, never a loop over events
        want = 1 + torch.floor(rand((B,), x, generator) * 3).long().clamp_max(2)
        slot = _empty_slot_of_type(m, want, generator, x)
        ok = slot >= 0
        s = slot.clamp_min(0)
        u = rand((B, 3), x, generator)
        lo = floors[s]
        new = torch.stack([lo + u[:, 0] * (pt_max - lo).clamp_min(0),
                           (2 * u[:, 1] - 1) * etas[s], (2 * u[:, 2] - 1) * math.pi], -1)
        out[rows, s] = torch.where(ok[:, None], new, out[rows, s])
        m[rows, s] = m[rows, s] | ok
    out = zero_padding(out, m)
    return _recompute_met(x, mask, out, m) if recompute_met else (out, m)


@register("event_split_objects")
def event_split_objects(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                        strength: float = 1.0, n: int = 1):
    """Anomaly augmentation at constant total pT and MET: ``round(n * strength)`` times, one random
    object that has a free slot of its type and enough pT is split in two collinear objects with
    flat Dirichlet shares above the floors (3 GeV leptons, 15 GeV jets):
    pT_1 = f + u (pT - 2 f), pT_2 = pT - pT_1, u ~ U(0, 1) (= Dirichlet(1, 1)). Same direction,
    so the visible vector sum, the scalar sum and MET are all unchanged.
    """
    _check(x)
    out, m = x.clone(), mask.clone()
    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    types = _slot_types(x.device)
    floors = _per_slot(PT_FLOOR, x)
    for _ in range(int(round(n * strength))):
        free = torch.stack([(~m & (types[None] == t)).any(1) for t in (0, 1, 2, 3)], 1)  # (B, 4)
        can = m & (types[None] != MET) & (out[..., 0] >= 2 * floors[None]) & free.gather(1, types[None].expand(B, -1))
        keys = torch.where(can, rand((B, N_OBJECTS), x, generator), torch.full((B, N_OBJECTS), -1.0, device=x.device, dtype=x.dtype))
        src = keys.argmax(1)
        ok = can.any(1)
        dst = _empty_slot_of_type(m, types[src], generator, x)
        ok = ok & (dst >= 0)
        d = dst.clamp_min(0)
        p = out[rows, src, 0]
        f = floors[src]
        u = rand((B,), x, generator)
        p1 = f + u * (p - 2 * f)
        child = out[rows, src].clone()
        child[:, 0] = p - p1
        out[rows, src, 0] = torch.where(ok, p1, p)
        out[rows, d] = torch.where(ok[:, None], child, out[rows, d])
        m[rows, d] = m[rows, d] | ok
    return zero_padding(out, m), m


@register("event_shift_met")
def event_shift_met(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                    strength: float = 1.0, low: float = 0.5, high: float = 5.0):
    """Anomaly augmentation: MET x U(1 + (low - 1) s, 1 + (high - 1) s) (s = 1: U(0.5, 5))."""
    _check(x)
    u = rand((x.shape[0],), x, generator)
    f = 1 + (low - 1) * strength + u * (high - low) * strength
    out = x.clone()
    out[:, 0, 0] = x[:, 0, 0] * f
    return zero_padding(out, mask), mask


@register("event_shift_pt")
def event_shift_pt(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                   strength: float = 1.0, low: float = 1.0, high: float = 5.0,
                   recompute_met: bool = False):
    """Anomaly augmentation: the pT of one random object per event x U(1 + (low-1) s,
    1 + (high-1) s) (s = 1: U(1, 5)); MET optionally recomputed."""
    _check(x)
    B = x.shape[0]
    can = mask & _objects(x)[None]
    keys = torch.where(can, rand((B, N_OBJECTS), x, generator), torch.full((B, N_OBJECTS), -1.0, device=x.device, dtype=x.dtype))
    pick = keys.argmax(1)
    u = rand((B,), x, generator)
    f = torch.where(can.any(1), 1 + (low - 1) * strength + u * (high - low) * strength, torch.ones_like(u))
    out = x.clone()
    rows = torch.arange(B, device=x.device)
    out[rows, pick, 0] = x[rows, pick, 0] * f
    out = zero_padding(out, mask)
    return _recompute_met(x, mask, out, mask) if recompute_met else (out, mask)
