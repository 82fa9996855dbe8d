import math

import torch

from clrdist.physics.frame import centroid, scale_pt, to_model_frame, wrap_phi


def _jets(B=6, P=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, P + 1, (B,), generator=g)
    n[0] = P
    mask = torch.arange(P)[None] < n[:, None]
    x = torch.stack([torch.rand(B, P, generator=g) * 100 + 1,
                     torch.randn(B, P, generator=g) * 0.3 + 1.5,
                     torch.randn(B, P, generator=g) * 0.3 + math.pi - 0.1], -1)
    x = torch.where(mask[..., None], x, torch.zeros(()))
    return x, mask


def test_wrap_phi_range():
    phi = torch.linspace(-20, 20, 10001)
    w = wrap_phi(phi)
    assert (w > -math.pi).all() and (w <= math.pi).all()
    assert torch.allclose(torch.cos(w), torch.cos(phi), atol=1e-5)
    assert wrap_phi(torch.tensor([math.pi])).item() == torch.tensor(math.pi).item()


def test_centred_on_pt_weighted_centroid_and_padding_zero():
    x, mask = _jets()
    y = to_model_frame(x, mask)
    assert y.shape == x.shape
    assert (y[~mask] == 0).all() and not torch.signbit(y[~mask]).any()
    assert torch.equal(y[..., 0], x[..., 0])
    c = centroid(y, mask)
    has = mask.any(1)
    assert torch.allclose(c[has], torch.zeros_like(c[has]), atol=1e-5)
    # jets straddle phi = pi: wrapped differences stay small
    assert y[..., 2].abs().max() < 2.5


def test_jet_axis_and_fully_padded():
    x, mask = _jets()
    mask[1] = False
    x[1] = 0
    axis = torch.tensor([[1.5, 3.0]]).expand(x.shape[0], 2)
    y = to_model_frame(x, mask, jet_axis=axis)
    assert torch.isfinite(y).all()
    assert torch.allclose(y[0, :, 1], x[0, :, 1] - 1.5)
    assert torch.allclose(y[0, :, 2], wrap_phi(x[0, :, 2] - 3.0))
    assert torch.isfinite(to_model_frame(x, mask)).all()


def test_scale_pt():
    x, mask = _jets()
    y = scale_pt(x, 600.0)
    assert torch.allclose(y[..., 0] * 600.0, x[..., 0])
    assert torch.equal(y[..., 1:], x[..., 1:])


def test_log_input_features_are_relative_scale_free_and_zero_padded():
    from clrdist.physics.frame import input_features

    x, mask = _jets(B=8, P=16, seed=3)
    y = to_model_frame(x, mask)
    f = input_features(y, mask, "log", 600.0)
    assert f.shape == (8, 16, 6)
    assert (f[~mask] == 0).all()
    z = f[..., 0]
    assert torch.allclose(z.sum(1)[mask.any(1)], torch.ones(int(mask.any(1).sum())), atol=1e-6)
    # scaling every pT by 3 leaves z and ln z alone and moves 0.7 ln pT by 0.7 ln 3
    g = input_features(torch.cat([y[..., :1] * 3, y[..., 1:]], -1), mask, "log", 600.0)
    assert torch.allclose(g[..., :2], f[..., :2], atol=1e-5)
    assert torch.allclose((g[..., 2] - f[..., 2])[mask], torch.full_like(f[..., 2][mask],
                                                                         0.7 * math.log(3)), atol=1e-4)
    # Delta R column is the distance of (d_eta, d_phi) from the axis, in the same units
    assert torch.allclose(f[..., 5], torch.sqrt(f[..., 3] ** 2 + f[..., 4] ** 2), atol=1e-5)
    # permuting the constituents permutes the features
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    fp = input_features(y[:, perm], mask[:, perm], "log", 600.0)
    assert torch.allclose(fp, f[:, perm], atol=1e-6)
    # "pt" is the JetCLR transform
    assert torch.equal(input_features(y, mask, "pt", 600.0), scale_pt(y, 600.0))


def test_keep_hardest_takes_the_highest_pt_real_slots():
    from clrdist.physics.frame import keep_hardest

    x, mask = _jets(B=5, P=12, seed=4)
    k, km = keep_hardest(x, mask, 4)
    assert k.shape == (5, 4, 3) and km.shape == (5, 4)
    for b in range(5):
        want = torch.sort(x[b, mask[b], 0], descending=True).values[:4]
        got = k[b, km[b], 0]
        assert torch.equal(got, want)
        assert int(km[b].sum()) == min(4, int(mask[b].sum()))
