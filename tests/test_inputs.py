"""The model's input transform: views on augment.slots, cut back to data.n_particles."""

import numpy as np
import torch

from clrdist.config import load_config
from clrdist.factory import input_transform
from clrdist.models.encode import model_inputs
from clrdist.physics.augment import build_view
from clrdist.train.inputs import view_inputs

SPLIT = "augment.views=[[{name: collinear_split, params: {fill: 1.0}}], [{name: collinear_split, params: {fill: 1.0}}]]"


def _full_jets(B=8, P=100, n=60, seed=0):
    rng = np.random.default_rng(seed)
    pt = -np.sort(-rng.exponential(10.0, (B, n)), axis=1) + 0.5
    p = np.zeros((B, P, 3), np.float32)
    p[:, :n, 0], p[:, :n, 1], p[:, :n, 2] = pt, rng.normal(0, 0.2, (B, n)), rng.normal(0, 0.2, (B, n))
    mask = np.zeros((B, P), bool)
    mask[:, :n] = True
    return p, mask


def _views(cfg, p, mask):
    views = [build_view(v, cfg.augment.strength, "torch") for v in cfg.augment.views]
    return view_inputs(p, mask, cfg, views, torch.Generator().manual_seed(1))


def test_collinear_splits_act_on_jets_that_fill_the_model_slots_only_with_room():
    p, mask = _full_jets()  # 60 constituents each, the model sees 50
    base = load_config(None, [SPLIT, "data.n_particles=50"])
    x0, m0 = model_inputs(p, mask, input_transform(base))
    x, m = _views(base, p, mask)  # no room: nothing to split, views equal the input
    assert x.shape == (16, 50, 3) and bool(m.all())
    assert torch.equal(x[:8], x0) and torch.equal(x[8:], x0)

    roomy = load_config(None, [SPLIT, "data.n_particles=50", "augment.slots=100"])
    x, m = _views(roomy, p, mask)  # 40 splits per jet, then the hardest 50 are kept
    assert x.shape == (16, 50, 3) and bool(m.all())
    assert not torch.equal(x[:8], x0)
    pt = x[..., 0]
    assert bool((pt[:, :-1] >= pt[:, 1:]).all())  # hardest first
    # splitting only ever lowers pT: the kept 50 carry at most what the input's hardest 50 did
    assert bool((pt.sum(1) <= torch.cat([x0[..., 0], x0[..., 0]]).sum(1) + 1e-6).all())


def test_log_features_reach_the_model_in_training_and_evaluation_alike():
    p, mask = _full_jets(n=30)
    cfg = load_config(None, ["model.input_features=log", "model.input_dim=6",
                             "augment.views=[[], []]"])
    x0, _ = model_inputs(p, mask, input_transform(cfg))
    x, _ = _views(cfg, p, mask)  # identity views
    assert x0.shape == (8, 50, 6)
    assert torch.allclose(x[:8], x0) and torch.allclose(x[8:], x0)
