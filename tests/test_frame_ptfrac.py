"""model.input_features: ptfrac carries no absolute scale (what the m_jj bump hunt may see)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clrdist.config import load_config
from clrdist.physics import INPUT_FEATURES
from clrdist.physics.frame import input_features, to_model_frame


def _jets(seed, n=16, p=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.rand(n, p, generator=g) * 300 + 1,
                     0.3 + 0.2 * torch.randn(n, p, generator=g),
                     3.0 + 0.2 * torch.randn(n, p, generator=g)], -1)
    m = torch.rand(n, p, generator=g) < 0.8
    m[:, 0] = True
    return torch.where(m.unsqueeze(-1), x, torch.zeros(())), m


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 50.0))
def test_ptfrac_is_invariant_under_a_common_pt_scale(seed, scale):
    x, m = _jets(seed)
    frame = to_model_frame(x, m)
    scaled = frame.clone()
    scaled[..., 0] *= scale
    a = input_features(frame, m, "ptfrac", 600.0)
    b = input_features(scaled, m, "ptfrac", 600.0)
    assert a.shape[-1] == INPUT_FEATURES["ptfrac"] == 5
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the log features are not: their ln pT column moves by ln(scale)
    la, lb = (input_features(t, m, "log", 600.0) for t in (frame, scaled))
    assert torch.allclose((lb - la)[..., 2][m], torch.full_like(la[..., 2][m], 0.7 * np.log(scale)),
                          atol=1e-3)
    # ptfrac = log without its ln pT column; padding stays zero
    torch.testing.assert_close(a, la[..., [0, 1, 3, 4, 5]])
    assert (a[~m] == 0).all()


def test_ptfrac_config_needs_five_input_columns():
    cfg = load_config("configs/demo.yaml", ["model.input_features=ptfrac", "model.input_dim=5"])
    assert cfg.model.input_features == "ptfrac"
    with pytest.raises(Exception, match="input_dim"):
        load_config("configs/demo.yaml", ["model.input_features=ptfrac", "model.input_dim=4"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 50.0), kappa=st.floats(0.1, 3.0))
def test_boost_features_are_invariant_under_pt_and_angle_scales(seed, scale, kappa):
    """A boost along the jet axis (small angles): every pT x lambda, every angle / lambda. The
    boost features see the same jet; ptfrac sees its angles shrink."""
    x, m = _jets(seed)
    frame = to_model_frame(x, m)
    boosted = frame.clone()
    boosted[..., 0] *= scale
    boosted[..., 1:3] *= kappa
    a = input_features(frame, m, "boost", 600.0)
    b = input_features(boosted, m, "boost", 600.0)
    assert a.shape[-1] == INPUT_FEATURES["boost"] == 5
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a[~m] == 0).all()
    p_a, p_b = (input_features(t, m, "ptfrac", 600.0) for t in (frame, boosted))
    if abs(kappa - 1) > 0.05:
        assert not torch.allclose(p_a[..., 2:], p_b[..., 2:], atol=1e-3)


def test_jet_angular_size_is_m_over_pt_for_a_two_prong_jet():
    from clrdist.physics.frame import jet_angular_size

    # two massless prongs with pT fractions z, 1 - z at angle d: m^2 ~ z (1-z) pT^2 d^2
    z, d = 0.3, 0.4
    x = torch.tensor([[[z * 1000, 0.0, 0.0], [(1 - z) * 1000, d, 0.0]]])
    m = torch.ones(1, 2, dtype=torch.bool)
    theta = float(jet_angular_size(x, m))
    assert theta == pytest.approx(np.sqrt(z * (1 - z)) * d, rel=1e-5)
