"""Typed configs: defaults, YAML, dotted overrides, and errors that name the key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clrdist.config import ConfigError, RunConfig, config_from_dict, load_config, save_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


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


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
augment:
  views:
    - [{name: rotate, params: {x: *d}}]
"""


def test_yaml_aliases_are_refused(tmp_path):
    """A 909-byte alias bomb in augment params passed preflight and expanded ~1e9 nodes when the
    config was dumped: aliases are refused at load, in the file and in --set values."""
    p = tmp_path / "bomb.yaml"
    p.write_text(BILLION_LAUGHS)
    with pytest.raises(ConfigError, match=rf"^{p}: invalid YAML: line 2: YAML aliases \(\*a\) are not accepted"):
        load_config(p)
    with pytest.raises(ConfigError, match="YAML aliases"):
        load_config(None, ["augment.strength=[&x 1, *x]"])
    p.write_text("loss: &l {temperature: 0.2}\n")  # an anchor alone is harmless
    assert load_config(p).loss.temperature == pytest.approx(0.2)


@pytest.mark.parametrize("override, needle", [
    ("seed=1.0e+23", "<defaults>: seed: "),
    ("seed=100000000000000000000000", "seed: Input should be less than or equal to 4294967295"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("optim.lr=.inf", "optim.lr: Input should be a finite number"),
    ("optim.lr=.nan", "optim.lr: Input should be a finite number"),
    ("loss.temperature=.inf", "loss.temperature: Input should be a finite number"),
    ("data.batch_size=1", "data.batch_size: Input should be greater than or equal to 2"),
    ("name=../../x", "name: String should match pattern"),
    ("name=a/b", "name: String should match pattern"),
    ("name=a..b", "name: Value error, 'a..b' holds '..'"),
    ("augment.views=[[{name: rotate, params: {strength2: [1, 2]}}]]", "augment.views.0.0.params.strength2"),
    ("augment.views=[[{name: drop, params: {p: abc}}]]", "augment.views.0.0.params.p"),
])
def test_hostile_values_are_refused_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("params, needle", [
    ({"p": True}, "augment.views.0.0.params.p: True is not a number (drop takes p: float)"),
    ({"keep_pt": 1}, "augment.views.0.0.params.keep_pt: 1 is not true or false"),
])
def test_augmentation_parameters_are_typed_by_their_signature(params, needle):
    from clrdist.train.preflight import check_augment_params

    cfg = load_config(None, [f"augment.views=[[{{name: drop, params: {params}}}], [{{name: rotate}}]]"
                             .replace("True", "true")])
    with pytest.raises(ConfigError) as err:
        check_augment_params(cfg)
    assert needle in str(err.value), str(err.value)
    check_augment_params(load_config(None, ["augment.views=[[{name: drop, params: {p: 1}}], [{name: rotate}]]"]))


# ---- loss and model are discriminated unions (clrdist/config_sections.py) ----

def test_a_key_of_another_loss_fails_naming_it(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("loss: {name: nt_xent, teacher_momentum: 0.9}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == (f"{p}: loss.teacher_momentum: not a field of loss 'nt_xent' "
                              "(its fields: name, temperature, gather, keep_positive, norm_penalty, "
                              "anomaly_norm)")
    with pytest.raises(ConfigError, match=r"^<defaults>: loss.keep_positive: not a field of "
                                          r"loss 'dino' \(its fields: name, temperature"):
        load_config(None, ["loss.name=dino", "loss.keep_positive=true"])
    with pytest.raises(ConfigError, match="loss.known_classes: not a field of loss 'supcon'"):
        load_config(None, ["loss.name=supcon", "loss.known_classes=[0]"])
    with pytest.raises(ConfigError, match=r"^<defaults>: loss.temprature: unknown key$"):
        load_config(None, ["loss.temprature=0.2"])  # a key of no loss stays a plain typo


def test_a_key_of_another_encoder_fails_naming_it():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.dense_dims=[8, 4]"])  # encoder: transformer (the default)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("<defaults>: model.dense_dims: not a field of encoder 'transformer' "
                          "(its fields: encoder, ")
    with pytest.raises(ConfigError, match=r"^<defaults>: model.heads: not a field of encoder "
                                          r"'dense' \(its fields: .*dense_dims"):
        load_config(None, ["model.encoder=dense", "model.heads=8"])
    # the fields every encoder takes are accepted under both
    for enc in ("transformer", "dense"):
        cfg = load_config(None, [f"model.encoder={enc}", "model.head=dino", "model.frame=event",
                                 "model.head_dims=[8]", "model.output_dim=4", "model.compile=true"])
        assert (cfg.model.encoder, cfg.model.head, cfg.model.frame) == (enc, "dino", "event")


def test_unknown_loss_and_encoder_names_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"^<defaults>: loss.name: unknown loss 'ntxent'; known: "
                                          r"anomalyclr, anomalyclr_plus, dino, nt_xent, orca, supcon$"):
        load_config(None, ["loss.name=ntxent"])
    with pytest.raises(ConfigError, match=r"^<defaults>: model.encoder: unknown encoder 'mlp'; "
                                          r"known: dense, transformer$"):
        load_config(None, ["model.encoder=mlp"])
    with pytest.raises(ConfigError, match=r"^<defaults>: loss: Input should be a valid dictionary"):
        load_config(None, ["loss=3"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_into_their_union_member(path):
    from clrdist.config import LOSS_SECTIONS, MODEL_SECTIONS

    cfg = load_config(path)
    assert type(cfg.loss) is LOSS_SECTIONS[cfg.loss.name]
    assert type(cfg.model) is MODEL_SECTIONS[cfg.model.encoder]


ROUND_TRIPS = [[], ["loss.name=dino", "loss.teacher_momentum=0.9"],
               ["loss.name=orca", "loss.known_classes=[0, 2]", "model.encoder=dense"],
               ["loss.name=supcon", "loss.keep_positive=false", "model.model_dim=16"]]


@pytest.mark.parametrize("source", [*CONFIGS, *map(tuple, ROUND_TRIPS)],
                         ids=[p.name for p in CONFIGS] + [" ".join(o) or "defaults" for o in ROUND_TRIPS])
def test_the_config_round_trips_through_dict_yaml_and_flat_params(source, tmp_path):
    from clrdist.config import config_from_dict

    cfg = load_config(source) if isinstance(source, Path) else load_config(None, list(source))
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and type(again.loss) is type(cfg.loss)
    assert type(again.model) is type(cfg.model)
    save_config(cfg, tmp_path / "r.yaml")
    assert load_config(tmp_path / "r.yaml") == cfg
    flat = cfg.flat()  # MLflow params: the chosen member's fields only
    assert {k.split(".", 1)[1] for k in flat if k.startswith("loss.")} == set(type(cfg.loss).model_fields)
    assert {k.split(".", 1)[1] for k in flat if k.startswith("model.")} == set(type(cfg.model).model_fields)


def test_a_stored_config_with_every_loss_and_encoder_field_still_resumes():
    """Runs stored before the unions hold each loss's and encoder's fields (they did nothing)."""
    from clrdist.config import config_from_dict, drop_foreign
    from clrdist.train.resume import _config_diff  # --resume / run-name continuation compare so

    cfg = load_config(None, ["loss.name=dino", "model.encoder=dense", "model.head=dino"])
    old = cfg.to_dict()
    old["loss"].update(keep_positive=None, known_classes=[0], labelled_fraction=0.5)
    old["model"].update(model_dim=64, heads=4, layers=2, dropout=0.1, buckets=1)
    with pytest.raises(ConfigError, match="loss.keep_positive: not a field of loss 'dino'"):
        config_from_dict(old)
    assert config_from_dict(old, stored=True) == cfg
    assert _config_diff(drop_foreign(old), cfg.to_dict()) == []
    assert _config_diff(old, cfg.to_dict())  # without it the old fields would differ
    assert drop_foreign({"loss": {"temperature": 0.2, "teacher_momentum": 0.9}}) == {
        "loss": {"temperature": 0.2}}  # no name: nt_xent


def test_the_sections_build_their_member_and_validate_assignments():
    from clrdist.config import DenseModelConfig, LossConfig, ModelConfig, ORCALossConfig

    assert type(LossConfig(name="orca", known_classes=[0, 1])) is ORCALossConfig
    assert type(ModelConfig(encoder="dense")) is DenseModelConfig
    cfg = load_config()
    cfg.loss = {"name": "dino", "teacher_momentum": 0.99}
    assert cfg.loss.teacher_momentum == 0.99
    with pytest.raises(ValueError, match="teacher_momentum"):
        cfg.loss = {"name": "nt_xent", "teacher_momentum": 0.99}


def test_an_override_switching_the_loss_drops_the_files_keys_of_the_old_one():
    demo = CONFIGS[0].parent / "demo.yaml"  # nt_xent with keep_positive: true
    cfg = load_config(demo, ["loss.name=dino"])
    assert cfg.loss.name == "dino" and "keep_positive" not in type(cfg.loss).model_fields
    assert load_config(demo, ["loss.name=anomalyclr"]).loss.keep_positive is True  # same family
    with pytest.raises(ConfigError, match="loss.keep_positive: not a field of loss 'dino'"):
        load_config(demo, ["loss.name=dino", "loss.keep_positive=true"])  # set with it: refused
    dense = load_config(demo, ["model.encoder=dense"])
    assert dense.model.encoder == "dense" and not hasattr(dense.model, "model_dim")


def test_a_training_worker_rebuilds_the_config_without_importing_the_evaluations():
    """The driver types ``eval.options`` (importing each evaluation it names, ~4 s of CPU);
    a worker rebuilding the validated config from its dict skips that and gets the same config,
    while the default still refuses a bad option."""
    code = """
import json, sys
from clrdist.config import config_from_dict
raw = json.loads(sys.stdin.read())
cfg = config_from_dict(raw, eval_options=False)
loaded = sorted(m for m in sys.modules if m.startswith("clrdist.eval.") and m != "clrdist.eval.registry")
print(json.dumps({"loaded": loaded, "same": cfg.to_dict() == raw}))
"""
    raw = load_config(ROOT / "configs" / "demo.yaml").to_dict()
    assert raw["eval"]["options"]  # the demo names options for three evaluations
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(raw), capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.splitlines()[-1]) == {"loaded": [], "same": True}
    raw["eval"]["options"]["nplm"]["bogus"] = 1
    with pytest.raises(ConfigError, match="eval.options.*nplm: bogus: unknown option"):
        config_from_dict(raw)
