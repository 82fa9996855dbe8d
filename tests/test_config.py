"""Typed configs: defaults, YAML, dotted overrides, and errors that name the key."""

from pathlib import Path

import pytest

from clrdist.config import ConfigError, RunConfig, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_defaults_validate_and_flatten():
    cfg = load_config()
    flat = cfg.flat()
    assert flat["loss.temperature"] == pytest.approx(0.1)
    assert flat["scaling.num_workers"] == 2
    assert cfg.data.batch_size == 128


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    cfg = load_config(None, ["loss.temperature=0.2", "model.head_dims=[32, 16]",
                             "scaling.engine=deepspeed", "data.eval_train_store=x.zarr"])
    assert cfg.loss.temperature == pytest.approx(0.2)
    assert cfg.model.head_dims == [32, 16]
    assert cfg.scaling.engine == "deepspeed"
    assert cfg.data.eval_train_store == "x.zarr"


@pytest.mark.parametrize("override, needle", [
    ("model.widht=3", "model.widht: unknown key"),
    ("loss.temperature=-1", "loss.temperature"),
    ("scaling.num_workers=zero", "scaling.num_workers"),
    ("scaling.engine=horovod", "scaling.engine"),
    ("nonsense.key=1", "nonsense: unknown key"),
    ("model.heads=3", "heads (3) must divide model_dim (64)"),
])
def test_bad_values_name_the_dotted_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["loss.temperature"])
    with pytest.raises(ConfigError, match="loss.temperature: Input should be a valid number"):
        load_config(None, ["loss.temperature.x=1"])
    p = tmp_path / "c.yaml"
    p.write_text("loss: {temperature: 0.1}\n")
    with pytest.raises(ConfigError, match="loss.temperature is not a section"):
        load_config(p, ["loss.temperature.x=1"])


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=f"{p}: top level must be a mapping"):
        load_config(p)
    p.write_text("loss: {temperature: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    # YAML tags that would build Python objects are refused by the safe loader
    p.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)


def test_nested_view_specs_reject_unknown_fields():
    with pytest.raises(ConfigError, match=r"augment.views.0.0.nmae: unknown key"):
        load_config(None, ["augment.views=[[{nmae: rotate}]]"])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(None, ["loss.temperature=0.3", "model.output_dim=8"])
    save_config(cfg, tmp_path / "r.yaml")
    assert load_config(tmp_path / "r.yaml") == cfg


def test_augment_slots_and_input_width_are_checked():
    from clrdist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="augment.slots .30. must be at least data.n_particles"):
        load_config(None, ["data.n_particles=50", "augment.slots=30"])
    with pytest.raises(ConfigError, match="model.input_dim .3. is narrower than the 6 columns"):
        load_config(None, ["model.input_features=log"])
    cfg = load_config(None, ["model.input_features=log", "model.input_dim=6", "augment.slots=100"])
    assert cfg.augment.slots == 100
