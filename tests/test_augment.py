"""Property tests of the jet augmentations (clrdist.physics.augment)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clrdist.config import AugmentSpec
from clrdist.physics.augment import AUGMENTATIONS, build_view, set_backend
from clrdist.physics.frame import centroid, to_model_frame


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def backend(request):
    """Every property test runs on both backends of the JetCLR steps: the fused C kernel (CPU
    float32 batches) and torch ops."""
    previous = set_backend(request.param)
    yield request.param
    set_backend(previous)

JET_AUGS = ["rotate", "translate", "smear_soft", "collinear_split", "drop", "pt_reweight",
            "subjet_shift", "feature_mask"]
DETERMINISTIC = {"pt_reweight"}  # no randomness unless width > 0


def jets(B=16, P=20, seed=0, n_min=0):
    """Model-frame jets: pT in GeV (1-200), eta/phi ~ 0.3 around the centroid, padded."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(n_min, P + 1, (B,), generator=g)
    mask = torch.arange(P)[None] < n[:, None]
    x = torch.stack([torch.rand(B, P, generator=g) * 199 + 1,
                     torch.randn(B, P, generator=g) * 0.3,
                     torch.randn(B, P, generator=g) * 0.3], -1)
    x = torch.where(mask[..., None], x, torch.zeros(()))
    return to_model_frame(x, mask), mask


def pairwise(x):
    return torch.cdist(x[..., 1:3], x[..., 1:3])


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


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


def test_build_view_orders_specs_and_rejects_unknown_names():
    x, mask = jets()
    specs = [AugmentSpec(name="rotate"), AugmentSpec(name="collinear_split", params={"fill": 1.0})]
    view = build_view(specs, strength=1.0)
    y, m = view(x, mask, gen(3))
    g = gen(3)  # one generator, consumed in order
    y2, m2 = AUGMENTATIONS["rotate"](x, mask, g)
    y2, m2 = AUGMENTATIONS["collinear_split"](y2, m2, g, fill=1.0)
    assert torch.equal(y, y2) and torch.equal(m, m2)
    with pytest.raises(KeyError, match="rotate"):
        build_view([AugmentSpec(name="rotat")])
    dict_view = build_view([{"name": "translate", "params": {"width": 0.5}}])
    assert dict_view(x, mask, gen())[0].shape == x.shape


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


# ---- event augmentations (ADC2021 layout) --------------------------------------------------------

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


def test_apply_views_fuses_identical_views():
    from clrdist.physics.augment import apply_views

    x, mask = jets()
    spec = [AugmentSpec(name="rotate"), AugmentSpec(name="collinear_split")]
    views = [build_view(spec), build_view(spec), build_view([AugmentSpec(name="drop")])]
    outs = apply_views(views, x, mask, gen(4))
    assert len(outs) == 3 and all(o[0].shape == x.shape for o in outs)
    assert not torch.equal(outs[0][0], outs[1][0])  # independent draws per view
    # the fused call is the single view applied to the repeated batch
    y, m = views[0](x.repeat(2, 1, 1), mask.repeat(2, 1), gen(4))
    assert torch.equal(outs[0][0], y[: len(x)]) and torch.equal(outs[1][1], m[len(x):])


# ---- the slot-major fast path: views, masks with holes ---------------------------------------

JETCLR_VIEW = [AugmentSpec(name="collinear_split"), AugmentSpec(name="collinear_split"),
               AugmentSpec(name="rotate"), AugmentSpec(name="smear_soft"), AugmentSpec(name="translate")]


def test_jetclr_view_equals_its_steps_in_turn():
    x, mask = jets(B=64, P=30, seed=11)
    y, m = build_view(JETCLR_VIEW)(x, mask, gen(5))
    g = gen(5)
    y2, m2 = x, mask
    for spec in JETCLR_VIEW:
        y2, m2 = AUGMENTATIONS[spec.name](y2, m2, g)
    assert torch.equal(y, y2) and torch.equal(m, m2)
    assert y.is_contiguous() and (y[~m] == 0).all()


def holes(x, mask, seed=0):
    """The same jets with their slots shuffled (real constituents no longer first)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(mask.shape, generator=g).argsort(1)
    return x.gather(1, order[..., None].expand_as(x)), mask.gather(1, order)


@pytest.mark.parametrize("name", ["rotate", "translate", "smear_soft", "collinear_split"])
def test_masks_with_holes(name):
    x, mask = jets(B=32, P=20, seed=12)
    xh, mh = holes(x, mask)
    assert not torch.equal(mh, torch.arange(20)[None] < mh.sum(1)[:, None])
    y, m = AUGMENTATIONS[name](xh, mh, gen(3))
    assert (y[~m] == 0).all() and (m | ~mh).all()
    assert torch.equal(y[..., 0].sum(1), xh[..., 0].sum(1)) or name == "collinear_split"
    assert torch.allclose((y[..., 0] * m).sum(1), (xh[..., 0] * mh).sum(1), rtol=1e-5)
    if name == "rotate":
        assert torch.allclose(centroid(y, m), centroid(xh, mh), atol=1e-5)
    if name == "collinear_split":
        assert torch.equal(m.sum(1), torch.minimum(torch.clamp(mh.sum(1), min=10), 2 * mh.sum(1)))
    # a view over the holes gives what its steps give in turn
    v, vm = build_view(JETCLR_VIEW)(xh, mh, gen(4))
    g = gen(4)
    v2, vm2 = xh, mh
    for spec in JETCLR_VIEW:
        v2, vm2 = AUGMENTATIONS[spec.name](v2, vm2, g)
    assert torch.equal(v, v2) and torch.equal(vm, vm2) and (v[~vm] == 0).all()


def test_empty_batch_and_empty_jets():
    x, mask = jets(B=8, P=10, seed=13)
    mask[:3] = False
    x = torch.where(mask[..., None], x, torch.zeros(()))
    for view in (build_view(JETCLR_VIEW), build_view(JETCLR_VIEW[2:])):
        y, m = view(x, mask, gen())
        assert torch.isfinite(y).all() and (y[~m] == 0).all() and not m[:3].any()
        y0, m0 = view(x[:0], mask[:0], gen())
        assert y0.shape == (0, 10, 3) and m0.shape == (0, 10)
    y, m = build_view(JETCLR_VIEW)(x[:3], mask[:3], gen())
    assert not m.any() and (y == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_jetclr_view_other_dtypes(dtype):
    x, mask = jets(B=32, P=30, seed=14)
    y, m = build_view(JETCLR_VIEW)(x.to(dtype), mask, gen())
    assert y.dtype == dtype and (y[~m] == 0).all() and torch.isfinite(y).all()
    n = mask.sum(1)
    assert torch.equal(m.sum(1), torch.minimum(torch.clamp(n, min=15), 4 * n).clamp(max=30))
    assert torch.allclose((y[..., 0].double() * m).sum(1), (x[..., 0].double() * mask).sum(1),
                          rtol=1e-12 if dtype == torch.float64 else 3e-2)


def test_apply_views_does_not_fuse_views_of_different_strength():
    from clrdist.physics.augment import apply_views

    x, mask = jets()
    views = [build_view(JETCLR_VIEW[2:], strength=1.0), build_view(JETCLR_VIEW[2:], strength=0.0)]
    (y1, _), (y0, m0) = apply_views(views, x, mask, gen())
    assert torch.allclose(y0, x, atol=1e-6) and torch.equal(m0, mask)
    assert not torch.allclose(y1, x, atol=1e-3)


def test_extra_features_are_carried():
    x, mask = jets(B=16, P=20, seed=15)
    extra = torch.where(mask, torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)), 0.0)
    x4 = torch.cat([x, extra[..., None]], -1)
    for name in ("rotate", "translate", "smear_soft"):
        y, m = AUGMENTATIONS[name](x4, mask, gen())
        assert torch.equal(y[..., 3], x4[..., 3])
        y3, _ = AUGMENTATIONS[name](x, mask, gen())
        assert torch.equal(y[..., :3], y3)
    y, m = AUGMENTATIONS["collinear_split"](x4, mask, gen(), fill=1.0)
    for b in range(16):  # every child carries its source's extra feature
        for c in x4[b][mask[b]]:
            same = (y[b][m[b]][:, 1:3] == c[1:3]).all(-1)
            assert (y[b][m[b]][same, 3] == c[3]).all()


# ---- the registry and the View type ------------------------------------------------------------

def test_physics_modules_import_no_circle():
    """The modules of clrdist.physics import each other without a cycle: the augmentation modules
    share clrdist.physics.registry and never import each other's private helpers."""
    import ast
    from pathlib import Path

    import clrdist.physics

    root = Path(clrdist.physics.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "clrdist.physics":
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clrdist.physics."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("clrdist.physics.")}
        graph[path.stem] = deps & {p.stem for p in root.glob("*.py")}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph[start])

    assert not [m for m in graph if reaches(m, m)], graph
    assert graph["augment_event"] == {"frame", "registry"}


def test_build_view_gives_a_view_that_says_what_it_does():
    from clrdist.physics.augment import View, rotate, translate

    specs = [AugmentSpec(name="rotate"), AugmentSpec(name="translate", params={"width": 0.5})]
    view = build_view(specs, strength=0.5, backend="torch")
    assert isinstance(view, View)
    assert view.steps == ((rotate, {}), (translate, {"width": 0.5}))
    assert (view.strength, view.backend) == (0.5, "torch")
    assert view.key == build_view(specs, strength=0.5, backend="torch").key
    assert view.key != build_view(specs, strength=1.0, backend="torch").key
    assert "rotate, translate" in repr(view)
    # the event augmentations are registered as soon as clrdist.physics.augment is imported
    assert {"event_smear", "event_rotate"} <= set(AUGMENTATIONS)
