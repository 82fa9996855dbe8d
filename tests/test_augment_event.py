"""Property tests of the event augmentations (ADC2021 layout: MET row 0, electrons 1-4, muons
5-8, jets 9-18): padding, seeds, MET balance, acceptance, widths; on both backends
(tests/_augment.py)."""

import math

import pytest
import torch
from _augment import backend, gen, jets  # noqa: F401  (backend: autouse, every test runs on both backends)
from hypothesis import given, settings
from hypothesis import strategies as st

from clrdist.physics.augment import AUGMENTATIONS

EVENT_AUGS = ["event_rotate", "event_smear", "event_acceptance", "event_add_objects",
              "event_split_objects", "event_shift_met", "event_shift_pt", "feature_mask"]


def events(B=64, seed=0, eta_scale=1.0):
    """ADC2021-like events: MET row 0, electrons 1-4, muons 5-8, jets 9-18 (contiguous blocks)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(B, 19, 3)
    mask = torch.zeros(B, 19, dtype=torch.bool)
    mask[:, 0] = True
    for start, size, n_hi, floor, eta_max in ((1, 4, 3, 3.0, 3.0), (5, 4, 3, 3.0, 2.1), (9, 10, 8, 15.0, 4.0)):
        n = torch.randint(0, n_hi + 1, (B,), generator=g)
        block = torch.arange(size)[None] < n[:, None]
        mask[:, start:start + size] = block
        x[:, start:start + size, 0] = floor + torch.rand(B, size, generator=g) * 200
        x[:, start:start + size, 1] = (2 * torch.rand(B, size, generator=g) - 1) * eta_max * eta_scale
        x[:, start:start + size, 2] = (2 * torch.rand(B, size, generator=g) - 1) * math.pi
    x[:, 0, 0] = torch.rand(B, generator=g) * 100 + 1
    x[:, 0, 2] = (2 * torch.rand(B, generator=g) - 1) * math.pi
    x = torch.where(mask[..., None], x, torch.zeros(()))
    return x, mask


def vec_sum(x, mask, rows=slice(0, 19)):
    v = torch.stack([x[..., 0] * torch.cos(x[..., 2]), x[..., 0] * torch.sin(x[..., 2])], -1)
    return (v * mask[..., None])[:, rows].sum(1)


@pytest.mark.parametrize("name", EVENT_AUGS)
def test_event_padding_seed_and_inputs(name):
    x, mask = events()
    x0, m0 = x.clone(), mask.clone()
    a = AUGMENTATIONS[name](x, mask, gen(3))
    b = AUGMENTATIONS[name](x, mask, gen(3))
    assert torch.equal(x, x0) and torch.equal(mask, m0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    y, m = a
    assert y.shape == x.shape and (y[~m] == 0).all() and torch.isfinite(y).all()
    assert (y[..., 2].abs() <= math.pi + 1e-6).all()


@pytest.mark.parametrize("name", [n for n in EVENT_AUGS if n != "feature_mask"])
def test_event_augmentations_reject_other_layouts(name):
    x, mask = jets()
    with pytest.raises(ValueError, match="19"):
        AUGMENTATIONS[name](x, mask, gen())


def test_event_rotation_is_global():
    x, mask = events()
    y, m = AUGMENTATIONS["event_rotate"](x, mask, gen())
    assert torch.equal(m, mask) and torch.equal(y[..., :2], x[..., :2])
    dphi = torch.remainder(y[..., 2] - x[..., 2], 2 * math.pi)
    ref = dphi[:, :1].expand_as(dphi)
    diff = torch.remainder(dphi - ref + math.pi, 2 * math.pi) - math.pi
    assert diff[mask].abs().max() < 1e-5
    assert torch.allclose(vec_sum(y, m).norm(dim=-1), vec_sum(x, mask).norm(dim=-1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name,kw", [("event_smear", {}), ("event_acceptance", {}),
                                      ("event_add_objects", {"n": 2})])
def test_event_met_balance(name, kw):
    # MET absorbs every change of the visible vector sum: the all-row vector sum is conserved.
    x, mask = events(eta_scale=1.3)  # some objects start outside the acceptance
    y, m = AUGMENTATIONS[name](x, mask, gen(), **kw)
    assert torch.allclose(vec_sum(y, m), vec_sum(x, mask), atol=2e-3)


def test_event_smear_acceptance_and_pt_width():
    x, mask = events(eta_scale=1.2)
    y, m = AUGMENTATIONS["event_smear"](x, mask, gen())
    limits = torch.tensor([math.inf] + [3.0] * 4 + [2.1] * 4 + [4.0] * 10)
    assert (y[..., 1].abs() <= limits)[m].all()
    assert (m[:, 1:] <= mask[:, 1:]).all()  # smearing only ever removes objects
    # width: pT = 100 GeV objects, many draws, sigma = sqrt(0.052 pT^2 + 1.502 pT) * strength
    B = 20000
    xe = torch.zeros(B, 19, 3)
    me = torch.zeros(B, 19, dtype=torch.bool)
    xe[:, 9:12, 0] = torch.tensor([50.0, 100.0, 400.0])
    me[:, 9:12] = True
    for s in (0.5, 1.0):
        ye, _ = AUGMENTATIONS["event_smear"](xe, me, gen(), strength=s, eta_sigma=0.0,
                                             phi_sigma=0.0, acceptance=False, recompute_met=False)
        pt = xe[0, 9:12, 0]
        expected = s * torch.sqrt(0.052 * pt**2 + 1.502 * pt)
        assert torch.allclose(ye[:, 9:12, 0].std(0), expected, rtol=0.03)
        assert torch.allclose(ye[:, 9:12, 0].mean(0), pt, atol=4 * expected.max().item() / B**0.5)
    ye, _ = AUGMENTATIONS["event_smear"](xe, me, gen(), pt=False, eta_sigma=0.1, phi_sigma=0.2,
                                         acceptance=False, recompute_met=False)
    assert ye[:, 9, 1].std().item() == pytest.approx(0.1, rel=0.03)
    assert ye[:, 9, 2].std().item() == pytest.approx(0.2, rel=0.03)


def test_event_add_objects_multiplicity_and_floors():
    x, mask = events()
    y, m = AUGMENTATIONS["event_add_objects"](x, mask, gen(), n=1)
    added = m & ~mask
    assert (added.sum(1) <= 1).all() and added.sum() > 0.8 * len(x)
    floors = torch.tensor([0.0] + [3.0] * 8 + [15.0] * 10).expand_as(m)
    assert (y[..., 0][added] >= floors[added]).all()
    assert torch.equal(y[:, 1:][mask[:, 1:]], x[:, 1:][mask[:, 1:]])  # existing objects untouched


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3))
def test_event_split_keeps_total_pt_and_met(seed, n):
    x, mask = events(B=32, seed=seed)
    y, m = AUGMENTATIONS["event_split_objects"](x, mask, gen(seed), n=n)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(m[:, 0], mask[:, 0])  # MET untouched
    assert torch.allclose((y[:, 1:, 0] * m[:, 1:]).sum(1), (x[:, 1:, 0] * mask[:, 1:]).sum(1), rtol=1e-5)
    assert torch.allclose(vec_sum(y, m, slice(1, 19)), vec_sum(x, mask, slice(1, 19)), atol=2e-3)
    assert ((m.sum(1) - mask.sum(1)) <= n).all() and (m.sum(1) > mask.sum(1)).any()
    floors = torch.tensor([0.0] + [3.0] * 8 + [15.0] * 10).expand_as(m)
    assert (y[..., 0][m] >= floors[m] - 1e-4).all()


def test_event_shifts():
    x, mask = events(B=2000)
    y, m = AUGMENTATIONS["event_shift_met"](x, mask, gen())
    f = y[:, 0, 0] / x[:, 0, 0]
    assert f.min() >= 0.5 - 1e-6 and f.max() <= 5 + 1e-5 and f.min() < 0.6 and f.max() > 4.9
    assert torch.equal(y[:, 1:], x[:, 1:])
    y, m = AUGMENTATIONS["event_shift_pt"](x, mask, gen())
    changed = (y[..., 0] != x[..., 0])
    assert changed[:, 0].sum() == 0 and (changed.sum(1) <= 1).all()
    ratio = y[..., 0][changed] / x[..., 0][changed]
    assert ratio.min() >= 1 - 1e-6 and ratio.max() <= 5 + 1e-5
