"""The ADC2021 event configs: they build, and training views keep the event's slot layout."""

from pathlib import Path

import numpy as np
import pytest
import torch

from clrdist.config import load_config
from clrdist.factory import build_loss, build_model, input_transform
from clrdist.models.encode import model_inputs
from clrdist.physics.augment import build_view
from clrdist.train.inputs import view_inputs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ADC = ["adc2021_dense_masking", "adc2021_dense_masking_cpu", "adc2021_dense_supcon_cpu",
       "anomalyclr_adc2021", "anomalyclr_adc2021_cpu"]


def _events(B=6, seed=0):
    """ADC2021-layout events with gaps: MET, 1 electron, 0 muons, 2 jets (slots 0, 1, 9, 10)."""
    rng = np.random.default_rng(seed)
    p = np.zeros((B, 19, 3), np.float32)
    mask = np.zeros((B, 19), bool)
    for slot, pt in ((0, 40.0), (1, 30.0), (9, 80.0), (10, 20.0)):
        p[:, slot] = np.stack([pt + rng.exponential(5, B), rng.normal(0, 1, B),
                               rng.uniform(-3, 3, B)], 1)
        mask[:, slot] = True
    return p, mask


@pytest.mark.parametrize("name", ADC)
def test_adc_config_builds_and_steps(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.frame == "event" and cfg.data.n_particles == 19
    views = [build_view(v) for v in cfg.augment.views]
    if cfg.augment.anomaly_view:
        views.append(build_view(cfg.augment.anomaly_view))
    p, mask = _events()
    xs, ms = view_inputs(p, mask, cfg, views, torch.Generator().manual_seed(0))
    _, z = build_model(cfg.model)(xs, ms)
    loss = build_loss(cfg.loss)(*z.chunk(len(views)), labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"])


def test_event_views_keep_the_slot_layout():
    """A view that changes nothing must equal the model's input: the slot is the object type
    (a jet harder than the electron stays in a jet slot), not re-sorted by pT."""
    cfg = load_config(CONFIGS / "adc2021_dense_masking_cpu.yaml",
                      ["augment.views=[[{name: feature_mask, params: {p: 0.0}}], "
                       "[{name: feature_mask, params: {p: 0.0}}]]"])
    p, mask = _events()
    views = [build_view(v) for v in cfg.augment.views]
    xs, ms = view_inputs(p, mask, cfg, views, torch.Generator().manual_seed(0))
    x0, m0 = model_inputs(p, mask, input_transform(cfg))
    assert torch.equal(xs[:6], x0) and torch.equal(ms[6:], m0)
    assert torch.equal(ms[:6], torch.as_tensor(mask))
