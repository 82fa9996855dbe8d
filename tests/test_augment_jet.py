"""Property tests of the jet augmentations (clrdist.physics.augment): what each conserves,
padding, seeds and widths; on both backends (tests/_augment.py)."""

import math

import pytest
import torch
from _augment import backend, gen, jets  # noqa: F401  (backend: autouse, every test runs on both backends)
from hypothesis import given, settings
from hypothesis import strategies as st

from clrdist.physics.augment import AUGMENTATIONS
from clrdist.physics.frame import centroid

JET_AUGS = ["rotate", "translate", "smear_soft", "collinear_split", "drop", "pt_reweight",
            "subjet_shift", "feature_mask"]


DETERMINISTIC = {"pt_reweight"}  # no randomness unless width > 0


def pairwise(x):
    return torch.cdist(x[..., 1:3], x[..., 1:3])


@pytest.mark.parametrize("name", JET_AUGS)
def test_padding_stays_padding_and_inputs_untouched(name):
    x, mask = jets()
    x0, m0 = x.clone(), mask.clone()
    y, m = AUGMENTATIONS[name](x, mask, gen())
    assert torch.equal(x, x0) and torch.equal(mask, m0)
    assert y.shape == x.shape and m.shape == mask.shape and m.dtype == torch.bool
    assert (y[~m] == 0).all()
    assert torch.isfinite(y).all()
    if name != "drop":
        assert (m | ~mask).all()  # real constituents stay real


@pytest.mark.parametrize("name", JET_AUGS)
def test_same_seed_same_output(name):
    x, mask = jets()
    a = AUGMENTATIONS[name](x, mask, gen(7))
    b = AUGMENTATIONS[name](x, mask, gen(7))
    c = AUGMENTATIONS[name](x, mask, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0]) == (name in DETERMINISTIC)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 8), P=st.integers(1, 16))
def test_rotation_conserves_pt_centroid_and_distances(seed, B, P):
    x, mask = jets(B, P, seed)
    y, m = AUGMENTATIONS["rotate"](x, mask, gen(seed))
    assert torch.equal(m, mask)
    assert torch.equal(y[..., 0], x[..., 0])
    assert torch.allclose(centroid(y, m), centroid(x, mask), atol=1e-5)
    pm = mask[:, :, None] & mask[:, None, :]
    assert torch.allclose(pairwise(y)[pm], pairwise(x)[pm], atol=1e-5)


def test_rotation_about_off_centre_centroid_and_angle_uniform():
    x, mask = jets(B=4000, P=8, seed=3, n_min=2)
    x = x.clone()
    x[..., 1:3] += torch.where(mask[..., None], torch.tensor([0.7, -0.4]), torch.zeros(()))
    y, _ = AUGMENTATIONS["rotate"](x, mask, gen())
    assert torch.allclose(centroid(y, mask), centroid(x, mask), atol=1e-5)
    # angle of the hardest constituent about the centroid: uniform over the circle
    c = centroid(x, mask)
    a0 = torch.atan2(x[:, 0, 2] - c[:, 1], x[:, 0, 1] - c[:, 0])
    a1 = torch.atan2(y[:, 0, 2] - c[:, 1], y[:, 0, 1] - c[:, 0])
    d = torch.remainder(a1 - a0, 2 * math.pi)
    hist = torch.histc(d, bins=8, min=0, max=2 * math.pi) / len(d)
    assert (hist - 1 / 8).abs().max() < 0.03


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), strength=st.floats(0.0, 3.0))
def test_translation_rigid_and_bounded_by_real_range(seed, strength):
    x, mask = jets(8, 12, seed)
    y, m = AUGMENTATIONS["translate"](x, mask, gen(seed), strength=strength)
    pm = mask[:, :, None] & mask[:, None, :]
    assert torch.allclose(pairwise(y)[pm], pairwise(x)[pm], atol=1e-4)
    for b in range(x.shape[0]):  # slow, obvious check against the padding-free range
        if mask[b].sum() == 0:
            continue
        real = x[b][mask[b]]
        shift = y[b][mask[b]][0, 1:] - real[0, 1:]
        ptp = real[:, 1:].amax(0) - real[:, 1:].amin(0)
        assert (shift.abs() <= strength * ptp + 1e-5).all()


def test_translation_width_scales_with_strength():
    x, mask = jets(B=4000, P=10, seed=2, n_min=2)
    ptp = (torch.where(mask, x[..., 1], -1e9).amax(1) - torch.where(mask, x[..., 1], 1e9).amin(1))
    for s in (0.5, 1.0, 2.0):
        y, _ = AUGMENTATIONS["translate"](x, mask, gen(), strength=s)
        u = (y[:, 0, 1] - x[:, 0, 1]) / ptp  # ~ U(-s, s): std s / sqrt(3)
        assert abs(u.std().item() - s / math.sqrt(3)) < 0.05 * s


def test_soft_smearing_width_is_lambda_over_pt():
    B, P = 20000, 4
    pts = torch.tensor([0.05, 0.5, 5.0, 50.0])  # the first is clipped to 0.1 GeV
    x = torch.zeros(B, P, 3)
    x[..., 0] = pts
    mask = torch.ones(B, P, dtype=torch.bool)
    for strength in (1.0, 2.0):
        y, m = AUGMENTATIONS["smear_soft"](x, mask, gen(), strength=strength)
        assert torch.equal(y[..., 0], x[..., 0])
        expected = 0.1 * strength / pts.clamp_min(0.1)
        for k in (1, 2):
            d = y[..., k] - x[..., k]
            assert torch.allclose(d.mean(0), torch.zeros(P), atol=4 * expected.max() / B**0.5 + 1e-6)
            assert torch.allclose(d.std(0), expected, rtol=0.03)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), P=st.integers(1, 20), fill=st.sampled_from([0.5, 0.8, 1.0]))
def test_collinear_split_conserves_momentum_and_splits_each_once(seed, P, fill):
    x, mask = jets(8, P, seed)
    y, m = AUGMENTATIONS["collinear_split"](x, mask, gen(seed), fill=fill)
    n, n2 = mask.sum(1), m.sum(1)
    expected = torch.minimum(torch.minimum(torch.clamp(n, min=int(fill * P)), 2 * n), torch.full_like(n, P))
    assert torch.equal(n2, expected)
    # 4-momentum sum of massless constituents (pT, eta, phi) is unchanged
    def p4(z):
        pt, eta, phi = z.unbind(-1)
        return torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi),
                            pt * torch.sinh(eta)], -1).sum(1)
    assert torch.allclose(p4(y), p4(x), rtol=1e-5, atol=1e-3)
    for b in range(x.shape[0]):  # each original constituent -> itself or exactly two halves
        orig, new = x[b][mask[b]], y[b][m[b]]
        for c in orig:
            same = (new[:, 1:] == c[1:]).all(-1)
            assert 1 <= same.sum() <= 2
            assert torch.allclose(new[same, 0].sum(), c[0], rtol=1e-5)


def test_strength_zero_is_identity_for_continuous_augmentations():
    x, mask = jets()
    for name in JET_AUGS:
        y, m = AUGMENTATIONS[name](x, mask, gen(), strength=0.0)
        assert torch.allclose(y, x, atol=1e-6) and torch.equal(m, mask), name


# ---- further jet augmentations -----------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.0, 1.0))
def test_drop_keeps_total_pt_and_centroid_and_compacts(seed, p):
    x, mask = jets(8, 15, seed)
    y, m = AUGMENTATIONS["drop"](x, mask, gen(seed), p=p)
    assert (m.sum(1) <= mask.sum(1)).all()
    assert torch.equal(m.any(1), mask.any(1))  # a non-empty jet keeps at least one constituent
    assert torch.equal(m, torch.arange(15)[None] < m.sum(1)[:, None])  # compacted
    assert torch.allclose((y[..., 0] * m).sum(1), (x[..., 0] * mask).sum(1), rtol=1e-5)
    assert torch.allclose(centroid(y, m), centroid(x, mask), atol=1e-5)
    assert (y[~m] == 0).all()


def test_drop_rate_scales_with_strength():
    x, mask = jets(B=2000, P=30, seed=4, n_min=20)
    for s in (0.5, 1.0):
        _, m = AUGMENTATIONS["drop"](x, mask, gen(), p=0.3, strength=s)
        rate = 1 - m.sum() / mask.sum()
        assert abs(rate.item() - 0.3 * s) < 0.02


def test_pt_reweight_power_law_and_total_pt():
    x, mask = jets(seed=5)
    y, m = AUGMENTATIONS["pt_reweight"](x, mask, gen(), beta=0.5, recentre=False)
    assert torch.equal(m, mask)
    assert torch.allclose((y[..., 0] * m).sum(1), (x[..., 0] * mask).sum(1), rtol=1e-5)
    b = 0
    i, j = 0, 1
    assert mask[b, :2].all()
    ratio = (y[b, i, 0] / y[b, j, 0]).item()
    assert ratio == pytest.approx((x[b, i, 0] / x[b, j, 0]).item() ** 0.5, rel=1e-5)
    same, _ = AUGMENTATIONS["pt_reweight"](x, mask, gen(), beta=1.0)
    assert torch.allclose(same, x, atol=1e-5)
    half, _ = AUGMENTATIONS["pt_reweight"](x, mask, gen(), beta=0.0, strength=0.5, recentre=False)
    assert (half[b, i, 0] / half[b, j, 0]).item() == pytest.approx(ratio, rel=1e-5)  # b = 0.5
    rc, _ = AUGMENTATIONS["pt_reweight"](x, mask, gen(), beta=2.0)
    assert torch.allclose(centroid(rc, mask), centroid(x, mask), atol=1e-5)


def test_subjet_shift_moves_one_cluster_rigidly():
    x, mask = jets(B=64, P=20, seed=6)
    y, m = AUGMENTATIONS["subjet_shift"](x, mask, gen(), radius=0.2, shift=0.1)
    assert torch.equal(m, mask) and torch.equal(y[..., 0], x[..., 0])
    d = (y[..., 1:3] - x[..., 1:3]).norm(dim=-1)
    assert (d <= 0.1 + 1e-6).all()
    moved = d > 0
    for b in range(64):  # the moved constituents all moved by the same vector
        if moved[b].any():
            v = (y[b] - x[b])[moved[b], 1:]
            assert torch.allclose(v, v[:1].expand_as(v), atol=1e-6)


def test_feature_mask_rate():
    x, mask = jets(B=500, P=20, seed=7, n_min=20)
    for s, p in ((1.0, 0.5), (0.5, 0.5)):
        y, m = AUGMENTATIONS["feature_mask"](x, mask, gen(), p=p, strength=s)
        assert torch.equal(m, mask)
        zeroed = (y == 0) & (x != 0)
        assert abs(zeroed.float().mean().item() - p * s) < 0.01
        assert ((y == 0) | (y == x)).all()
