"""The ready configs validate and build: augmentations, model and loss all resolve."""

from pathlib import Path

import pytest
import torch

from clrdist.config import ConfigError, config_from_dict, load_config
from clrdist.factory import build_loss, build_model
from clrdist.losses import LOSSES
from clrdist.physics.augment import build_view
from clrdist.train.inputs import view_inputs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MINE = ["jetclr_toptag", "anomalyclr_adc2021", "darkclr_svj"]
CPU = ["jetclr_toptag_cpu", "anomalyclr_adc2021_cpu", "darkclr_svj_cpu", "adc2021_dense_masking"]


@pytest.mark.parametrize("name", MINE + CPU)
def test_config_validates_and_resolves(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    views = [build_view(v, cfg.augment.strength) for v in cfg.augment.views]
    loss = build_loss(cfg.loss)
    if loss.needs_anomaly_view:
        assert cfg.augment.anomaly_view, "this loss needs augment.anomaly_view"
        views.append(build_view(cfg.augment.anomaly_view, cfg.augment.strength))
    assert cfg.loss.name in LOSSES and len(views) >= 2


@pytest.mark.parametrize("name", CPU)
def test_cpu_variant_runs_one_step(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    P = cfg.data.n_particles
    g = torch.Generator().manual_seed(0)
    B = 8
    x = torch.rand(B, P, 3, generator=g) * 50 + 1
    mask = torch.arange(P)[None] < torch.randint(3, P + 1, (B,), generator=g)[:, None]
    x = torch.where(mask[..., None], x, torch.zeros(()))
    views = [build_view(v) for v in cfg.augment.views]
    if cfg.augment.anomaly_view:
        views.append(build_view(cfg.augment.anomaly_view))
    xs, ms = view_inputs(x, mask, cfg, views, g)  # the run's own input transform
    model = build_model(cfg.model)
    _, z = model(xs, ms)
    terms = build_loss(cfg.loss)(*z.chunk(len(views)), labels=torch.zeros(B, dtype=torch.long))
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])


def test_published_hyper_parameters():
    j = load_config(CONFIGS / "jetclr_toptag.yaml")
    assert (j.model.model_dim, j.model.ff_dim, j.model.heads, j.model.layers) == (1000, 1000, 4, 4)
    assert (j.optim.lr, j.data.global_batch_size, j.loss.temperature, j.optim.epochs) == (5e-5, 128, 0.1, 500)
    d = load_config(CONFIGS / "darkclr_svj.yaml")
    assert (d.model.model_dim, d.model.ff_dim, d.model.output_dim, d.data.global_batch_size,
            d.optim.epochs) == (128, 512, 512, 256, 150)
    a = load_config(CONFIGS / "anomalyclr_adc2021.yaml")
    assert (a.model.model_dim, a.model.ff_dim, a.model.output_dim, a.model.layers) == (160, 160, 160, 4)
    assert a.data.n_particles == 19 and a.model.frame == "event"


@pytest.mark.parametrize("name, published", [("jetclr_toptag", 128), ("darkclr_svj", 256),
                                             ("anomalyclr_adc2021", 128)])
@pytest.mark.parametrize("workers", [1, 2, 4, 16])
def test_published_configs_keep_the_global_batch_at_any_worker_count(name, published, workers):
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"scaling.num_workers={workers}"])
    assert cfg.data.batch_size * workers == published == cfg.data.global_batch_size


def test_a_global_batch_the_workers_do_not_divide_is_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "darkclr_svj.yaml", ["scaling.num_workers=3"])
    msg = str(e.value)
    assert "\n" not in msg and "data.global_batch_size (256)" in msg and "num_workers (3)" in msg
    with pytest.raises(ConfigError, match="set one"):
        load_config(None, ["data.global_batch_size=256", "scaling.num_workers=2", "data.batch_size=64"])
    cfg = load_config(None, ["data.global_batch_size=256", "scaling.num_workers=2"])
    assert cfg.data.batch_size == 128 and config_from_dict(cfg.to_dict()) == cfg  # round trip
