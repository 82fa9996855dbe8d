"""clrdist.factory: the config -> objects step the library never takes itself."""

import inspect

import pytest

from clrdist.config import LOSS_SECTIONS, MODEL_SECTIONS, LossConfig, ModelConfig, load_config
from clrdist.factory import (
    ENCODERS,
    HEADS,
    build_loss,
    build_model,
    build_views,
    initial_model,
    input_transform,
)
from clrdist.losses import LOSSES
from clrdist.models.encode import InputTransform


def test_every_loss_takes_the_fields_of_its_config_section():
    assert set(LOSS_SECTIONS) == set(LOSSES)
    for name, section in LOSS_SECTIONS.items():
        params = inspect.signature(LOSSES[name]).parameters
        fields = set(section.model_fields) - {"name"}
        assert fields <= set(params), (name, fields - set(params))
        # and every keyword the loss has a config field for is one of them
        every = {f for s in LOSS_SECTIONS.values() for f in s.model_fields}
        assert set(params) & every <= fields | {"name"}, (name, set(params) & every - fields)


def test_build_loss_passes_the_section_fields():
    loss = build_loss(LossConfig(name="dino", temperature=0.2, centre_momentum=0.8, gather=False))
    assert (loss.temperature, loss.centre_momentum, loss.gather) == (0.2, 0.8, False)
    orca = build_loss(LossConfig(name="orca", known_classes=[0, 2], labelled_fraction=0.3))
    assert orca.known == [0, 2] and orca.labelled_fraction == 0.3
    with pytest.raises(ValueError, match="unknown loss 'ntxent'; known: anomalyclr"):
        LossConfig(name="ntxent")


def test_every_encoder_and_head_the_config_names_is_built():
    encoders = ModelConfig.model_fields["encoder"].annotation.__args__
    heads = ModelConfig.model_fields["head"].annotation.__args__
    assert set(encoders) == set(ENCODERS) == set(MODEL_SECTIONS)
    assert set(heads) == set(HEADS) | {"mlp"}
    small = {"transformer": dict(model_dim=8, ff_dim=8, heads=2, layers=1),
             "dense": dict(dense_input_dim=6, dense_dims=[8, 4])}
    for enc in encoders:
        for head in heads:
            model = build_model(ModelConfig(encoder=enc, head=head, head_dims=[8], output_dim=4,
                                            **small[enc]))
            assert type(model.head).__name__ == ("ProjectionHead" if head == "mlp"
                                                 else HEADS[head].__name__)


def test_initial_model_is_seeded_and_views_come_in_config_order():
    cfg = load_config(None, ["model.model_dim=8", "model.ff_dim=8", "model.heads=2",
                             "model.layers=1"])
    a, b = initial_model(cfg.model, 3), initial_model(cfg.model, 3)
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    views = build_views(cfg)
    assert len(views) == len(cfg.augment.views) + len(cfg.augment.local_views) + bool(
        cfg.augment.anomaly_view)


def test_input_transform_reads_the_four_fields_the_model_inputs_depend_on():
    cfg = load_config(None, ["data.n_particles=20", "data.pt_scale=300", "model.frame=event",
                             "model.input_features=log", "model.input_dim=6"])
    assert input_transform(cfg) == InputTransform(n_particles=20, frame="event", features="log",
                                                  pt_scale=300.0)
