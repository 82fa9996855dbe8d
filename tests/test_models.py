"""Encoders: shapes, masking, permutation invariance, IR and collinear safety."""

import pytest
import torch

from clrdist.config import ModelConfig
from clrdist.factory import build_model
from clrdist.models import ContrastiveModel, DenseEncoder, TransformerEncoder

SMALL = dict(model_dim=32, ff_dim=64, heads=4, layers=2, head_dims=[32], output_dim=16, dropout=0.0)


def jets(B=5, P=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, P + 1, (B,), generator=g)
    n[0] = P
    mask = torch.arange(P)[None] < n[:, None]
    x = torch.stack([torch.rand(B, P, generator=g) + 0.05, torch.randn(B, P, generator=g) * 0.3,
                     torch.randn(B, P, generator=g) * 0.3], -1)
    return torch.where(mask[..., None], x, torch.zeros(())), mask


def model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**SMALL, **kw})).eval().double()


CONFIGS = {
    "pt_sum": dict(),
    "mean": dict(pooling="mean"),
    "sum": dict(pooling="sum", norm_first=False),  # DarkCLR's public code
    "jetclr_bias": dict(log_pt_bias=True),
    "post_norm": dict(norm_first=False, log_pt_bias=True),
    "irc_safe": dict(log_pt_bias=True, log_pt_bias_scale=1.0, embed_pt=False),
    "irc_safe_mean": dict(log_pt_bias=True, log_pt_bias_scale=1.0, embed_pt=False, pooling="mean"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_shapes_and_permutation_invariance(name):
    m = model(**CONFIGS[name])
    x, mask = jets()
    x, mask = x.double(), mask
    rep, z = m(x, mask)
    assert rep.shape == (5, 32) and z.shape == (5, 16)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(1))
    rep2, z2 = m(x[:, perm], mask[:, perm])
    assert torch.allclose(rep, rep2, atol=1e-10) and torch.allclose(z, z2, atol=1e-10)
    assert torch.allclose(m.represent(x, mask), rep)


def test_sum_pooling_is_the_mean_times_the_multiplicity():
    x, mask = jets()
    x = x.double()
    mean, total = model(pooling="mean").represent(x, mask), model(pooling="sum").represent(x, mask)
    assert torch.allclose(total, mean * mask.sum(1, keepdim=True), atol=1e-10)


@pytest.mark.parametrize("name", CONFIGS)
def test_padding_values_and_fully_padded_rows_are_harmless(name):
    m = model(**CONFIGS[name])
    m.train()  # also with dropout paths active (p = 0 here) and gradients
    x, mask = jets()
    x = x.double()
    mask[2] = False
    x[2] = 0
    rep, z = m(x, mask)
    assert torch.isfinite(rep).all() and torch.isfinite(z).all()
    z.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # garbage in padded slots changes nothing
    m.eval()
    x2 = torch.where(mask[..., None], x, torch.randn_like(x) * 5)
    assert torch.allclose(m(x, mask)[0], m(x2, mask)[0], atol=1e-10)
    # extra trailing padding changes nothing (bucketing trims it)
    xp = torch.cat([x, torch.zeros(5, 7, 3, dtype=x.dtype)], 1)
    mp = torch.cat([mask, torch.zeros(5, 7, dtype=torch.bool)], 1)
    assert torch.allclose(m(xp, mp)[0], m(x, mask)[0], atol=1e-10)


def add_soft(x, mask):
    """Append a zero-pT real particle at a random (eta, phi)."""
    extra = torch.zeros(x.shape[0], 1, 3, dtype=x.dtype)
    extra[..., 1:] = torch.randn(x.shape[0], 1, 2, dtype=x.dtype, generator=torch.Generator().manual_seed(5))
    return torch.cat([x, extra], 1), torch.cat([mask, torch.ones(x.shape[0], 1, dtype=torch.bool)], 1)


def split_first(x, mask, r=0.3):
    """Split the first constituent collinearly into r pT and (1 - r) pT."""
    child = x[:, :1].clone()
    child[..., 0] *= 1 - r
    x = x.clone()
    x[:, 0, 0] *= r
    return torch.cat([x, child], 1), torch.cat([mask, torch.ones(x.shape[0], 1, dtype=torch.bool)], 1)


IR_SAFE = {"jetclr_bias", "post_norm", "irc_safe"}
C_SAFE = {"irc_safe"}


@pytest.mark.parametrize("name", CONFIGS)
def test_infrared_safety_claims(name):
    m = model(**CONFIGS[name])
    x, mask = jets()
    x = x.double()
    rep, rep_soft = m.represent(x, mask), m.represent(*add_soft(x, mask))
    diff = (rep - rep_soft).abs().max().item()
    if name in IR_SAFE:
        assert diff < 1e-5
    else:
        assert diff > 1e-3  # the zero-pT particle is attended to / counted


@pytest.mark.parametrize("name", CONFIGS)
def test_collinear_safety_claims(name):
    m = model(**CONFIGS[name])
    x, mask = jets()
    x = x.double()
    rep, rep_split = m.represent(x, mask), m.represent(*split_first(x, mask))
    diff = (rep - rep_split).abs().max().item()
    if name in C_SAFE:
        assert diff < 1e-5
    else:
        assert diff > 1e-3


def test_dense_encoder_shapes_and_flattening():
    cfg = ModelConfig(encoder="dense", dense_dims=[96, 64, 48, 4], head_dims=[48], output_dim=96)
    m = build_model(cfg)
    assert isinstance(m.encoder, DenseEncoder) and isinstance(m, ContrastiveModel)
    x = torch.randn(8, 19, 3)
    mask = torch.rand(8, 19) > 0.3
    rep, z = m(x, mask)
    assert rep.shape == (8, 4) and z.shape == (8, 96)
    m.eval()
    flat = torch.where(mask[..., None], x, torch.zeros(())).flatten(1)
    assert torch.allclose(m.represent(x, mask), m.encoder(flat))
    # default LayerNorm (exact under N workers); BatchNorm, the paper's, on request
    assert sum(isinstance(mod, torch.nn.LayerNorm) for mod in m.encoder.modules()) == 3
    bn = build_model(cfg.model_copy(update={"dense_norm": "batch"})).encoder
    assert sum(isinstance(mod, torch.nn.BatchNorm1d) for mod in bn.modules()) == 3
    expander = build_model(cfg.model_copy(update={"head_batchnorm": True})).head
    assert sum(isinstance(mod, torch.nn.BatchNorm1d) for mod in expander.modules()) == 1


def test_transformer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divide"):
        TransformerEncoder(model_dim=30, heads=4)
    with pytest.raises(ValueError, match="pooling"):
        TransformerEncoder(pooling="max")


def test_buckets_and_holes_are_exact():
    x, mask = jets(B=16, P=12, seed=3)
    x = x.double()
    m1 = model(log_pt_bias=True)
    m3 = model(log_pt_bias=True, buckets=3)
    assert torch.allclose(m1(x, mask)[0], m3(x, mask)[0], atol=1e-10)
    # holes in the mask (events, dropped constituents): same as the compacted sample
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(m3(x[:, perm], mask[:, perm])[0], m1(x, mask)[0], atol=1e-10)
    # gradients flow through the bucket reassembly
    m3.train()
    m3(x, mask)[1].square().sum().backward()
    assert all(p.grad is not None for p in m3.parameters())


def test_cpu_dropout_rate_expectation_and_seed():
    from clrdist.models.transformer import dropout

    x = torch.ones(200, 1000)
    torch.manual_seed(0)
    y = dropout(x, 0.1, True)
    kept = (y > 0).float().mean().item()
    assert abs(kept - (1 - 26 / 256)) < 0.003  # p rounded to a multiple of 1/256
    assert abs(y.mean().item() - 1.0) < 0.005  # expectation kept
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, True), y)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    m = model(dropout=0.1).float().train()
    xj, mask = jets()
    torch.manual_seed(1)
    a = m(xj, mask)[0]
    torch.manual_seed(1)
    assert torch.equal(a, m(xj, mask)[0])  # training forward reproducible under the global seed
