"""Typed run configuration.

A run is described by one YAML file (see ``configs/``) whose sections map onto the models below.
Every field has a default and a one-line comment; unknown keys and invalid values are rejected
with the dotted path of the offending key, *before* any cluster resource is started.

    cfg = load_config("configs/demo.yaml", overrides=["loss.temperature=0.2"])

Overrides are ``section.key=value`` strings; the value is parsed as YAML (so ``0.2`` is a float,
``true`` a bool, ``[1, 2]`` a list) and then validated like the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from clrdist.config_sections import (  # noqa: F401 - re-exported: clrdist.config names them all
    CONTRASTIVE,
    LOSS_SECTIONS,
    MODEL_SECTIONS,
    AnyLoss,
    AnyModel,
    ContrastiveLossConfig,
    DenseModelConfig,
    DINOLossConfig,
    LossConfig,
    ModelConfig,
    ORCALossConfig,
    TransformerModelConfig,
    _Section,
    drop_foreign,
    drop_switched,
    members,
    section_error,
)
from clrdist.errors import PLAIN_NAME, ClrdistError
from clrdist.eval.registry import EVALUATIONS, check_names, validate_options
from clrdist.physics import INPUT_FEATURES


class ConfigError(ClrdistError, ValueError):
    """A configuration that cannot be used; the message names the dotted key and the problem."""


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds; larger ones overflowed in the workers


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases: ``*anchor`` references let a 1 kB file expand into
    ~1e9 nodes ("billion laughs") when the config is copied or dumped; configs need none."""

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) "
                                 "are not accepted in clrdist configs; write the value out")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing aliases (every config, override and sweep file is read so)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


class DataConfig(_Section):
    train_store: str = "data/toy_train.zarr"  # Zarr store the contrastive training reads
    eval_train_store: str | None = None  # labelled store to fit downstream classifiers on
    eval_test_store: str | None = None  # labelled store, disjoint from the above, to score on
    val_store: str | None = None  # labelled validation store (eval.every_epochs, Tune), never the test store
    # PER-WORKER batch; the global batch is this x num_workers. At least 2: a contrastive loss
    # with one row per worker has no negatives and trains to 0 (a collapsed encoder)
    batch_size: int = Field(128, ge=2)
    # the global batch (all workers together, what papers quote): per worker = this /
    # scaling.num_workers (must divide); sets batch_size. None: batch_size is per worker
    global_batch_size: int | None = Field(None, gt=0)
    n_particles: int = Field(50, gt=0)  # constituents per sample fed to the model (hardest first)
    shuffle_buffer: int = Field(8192, ge=0)  # samples mixed across chunks; 0 = chunk order only
    loader_threads: int = Field(1, ge=0)  # decoder threads per worker; 0 = decode on the loop thread
    pt_scale: float = Field(600.0, gt=0)  # GeV; model input pT = pT / pt_scale (JetCLR: 600)


class AugmentSpec(_Section):
    name: str  # registered augmentation name (see clrdist.physics.augment.AUGMENTATIONS)
    # keyword arguments of that augmentation: every one a number or a switch (checked against the
    # augmentation's signature before Ray starts)
    params: dict[str, bool | int | float] = Field(default_factory=dict)


class AugmentConfig(_Section):
    # Each view is an ordered list of augmentations applied to the same input jet.
    views: list[list[AugmentSpec]] = Field(
        default_factory=lambda: [
            [AugmentSpec(name="rotate"), AugmentSpec(name="translate"),
             AugmentSpec(name="smear_soft"), AugmentSpec(name="collinear_split")],
            [AugmentSpec(name="rotate"), AugmentSpec(name="translate"),
             AugmentSpec(name="smear_soft"), AugmentSpec(name="collinear_split")],
        ]
    )
    anomaly_view: list[AugmentSpec] | None = None  # third view for AnomalyCLR-type losses
    # particle slots the views work on (room for collinear splits); each view then keeps its
    # hardest data.n_particles. None: data.n_particles (no room in jets that fill every slot)
    slots: int | None = Field(None, gt=0)
    # student-only views of multi-view losses (DINO's local views: stronger masking or dropping)
    local_views: list[list[AugmentSpec]] = Field(default_factory=list)
    strength: float = Field(1.0, ge=0)  # scales every augmentation's size (for sweeps)
    # JetCLR steps on CPU: "auto" = the fused C kernel where it builds, else torch ops; "kernel"
    # requires the kernel (checked before Ray starts); "torch" = torch ops (docs/core.md)
    backend: Literal["auto", "torch", "kernel"] = "auto"


class OptimConfig(_Section):
    lr: float = Field(5e-4, gt=0)  # Adam(W) learning rate
    weight_decay: float = Field(0.0, ge=0)  # AdamW weight decay
    epochs: int = Field(2, gt=0)  # passes over the training store
    max_steps: int | None = Field(None, gt=0)  # stop early after this many optimiser steps
    warmup_steps: int = Field(0, ge=0)  # linear warm-up, then cosine decay
    grad_clip: float | None = Field(None, gt=0)  # clip the global gradient norm


class ScalingConfig(_Section):
    num_workers: int = Field(2, gt=0)  # Ray Train workers (one per GPU on a cluster)
    use_gpu: bool = False  # one GPU per worker, NCCL backend
    engine: Literal["ddp", "deepspeed"] = "ddp"  # distributed engine the loop steps through
    zero_stage: Literal[0, 1, 2] = 1  # DeepSpeed ZeRO stage
    # auto: bf16 autocast of the encoder on GPUs (TF32 matmuls) and on CPUs with native bf16
    # (AVX512-BF16/AMX), else fp32; the loss is float32 always (clrdist/precision.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)  # Ray CPU resources per worker
    max_failures: int = Field(0, ge=-1)  # worker failures tolerated before the run fails
    # a collective (gradient all-reduce, gather, barrier) waiting longer than this fails the run
    collective_timeout_s: int = Field(900, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bf16" in data:
            raise ValueError("scaling.bf16 was replaced by scaling.precision: auto | fp32 | bf16 "
                             "(bf16: true -> precision: bf16)")
        return data


class CheckpointConfig(_Section):
    storage_path: str = "runs"  # Ray storage (shared file system on a cluster)
    # when checkpoints are written (docs/core.md): any of these, and always at the end
    every_steps: int | None = Field(None, gt=0)  # every this many optimiser steps
    every_minutes: float | None = Field(30.0, gt=0)  # every this many minutes (at logging steps)
    every_epochs: int | None = Field(None, gt=0)  # at the end of every this many epochs
    num_to_keep: int = Field(2, gt=0)  # checkpoints retained


class TrackingConfig(_Section):
    uri: str = "sqlite:///mlflow.db"  # MLflow tracking URI (sqlite:///..., http://...)
    experiment: str = "clrdist"  # MLflow experiment name
    run_name: str | None = None  # MLflow run name; generated if unset
    log_every: int = Field(10, gt=0)  # log step metrics every this many optimiser steps


class _EvalSettings(_Section):
    lct_max_samples: int | None = Field(None, gt=0)  # cap the samples used per evaluation store
    every_epochs: int | None = Field(None, gt=0)  # quick LCT during training: fit eval_train, score val_store
    # where the post-training evaluation encodes and fits its torch models (NPLM, AE, NAE, jet
    # images): auto = the GPU when there is one, else cpu; or cpu, cuda, cuda:N
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    init_seeds: int = Field(5, ge=1)  # the untrained reference at seeds seed, seed+1, ... (<name>_init_*)
    # per-evaluation keyword arguments, typed by clrdist.eval.registry (docs/eval.md), e.g.
    # {nplm: {n_toys_null: 200, M: 500}}
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _typed_options(cls, options: dict[str, dict[str, Any]],
                       info: ValidationInfo) -> dict[str, dict[str, Any]]:
        try:
            check_names(options)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if (info.context or {}).get("eval_options", True):  # typing them imports each evaluation
            for name, kwargs in options.items():
                validate_options(name, kwargs)
        return options

    def requested(self) -> list[str]:
        """The evaluations switched on, in registry order."""
        return [name for name in EVALUATIONS if getattr(self, name)]


# One switch per evaluation of clrdist.eval.registry.EVALUATIONS (its help is the comment): run
# it after training, e.g. eval.lct: true (the linear classifier test, the one on by default).
EvalConfig = create_model(
    "EvalConfig", __base__=_EvalSettings,
    **{name: (bool, Field(ev.default, description=ev.help)) for name, ev in EVALUATIONS.items()})


class RunConfig(_Section):
    name: str = Field("clrdist", pattern=PLAIN_NAME)  # human name; names the run's checkpoint folder
    seed: int = Field(0, ge=0, le=SEED_MAX)  # seeds data order, augmentations and initialisation
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: AnyModel = Field(default_factory=TransformerModelConfig)  # one per model.encoder
    loss: AnyLoss = Field(default_factory=ContrastiveLossConfig)  # one per loss.name
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if ".." in name:
            raise ValueError(f"{name!r} holds '..': it names a folder and must stay inside "
                             "checkpoint.storage_path")
        return name

    @model_validator(mode="after")
    def _inputs_fit(self) -> RunConfig:
        slots, n = self.augment.slots, self.data.n_particles
        if slots is not None and slots < n:
            raise ValueError(f"augment.slots ({slots}) must be at least data.n_particles ({n}): "
                             "views are cut back to the hardest data.n_particles")
        m = self.model
        width = INPUT_FEATURES[m.input_features]
        if m.encoder == "transformer" and m.input_dim < width:
            raise ValueError(f"model.input_dim ({m.input_dim}) is narrower than the {width} columns "
                             f"of model.input_features {m.input_features!r} (plus any extra "
                             "particle features of the store)")
        return self

    @model_validator(mode="after")
    def _per_worker_batch(self) -> RunConfig:
        d, workers = self.data, self.scaling.num_workers
        if d.global_batch_size is None:
            return self
        per_worker, rest = divmod(d.global_batch_size, workers)
        if rest or per_worker < 2:
            raise ValueError(f"data.global_batch_size ({d.global_batch_size}) is not divisible "
                             f"by scaling.num_workers ({workers}) into batches of 2 or more")
        if "batch_size" in d.model_fields_set and d.batch_size != per_worker:
            raise ValueError(f"data.batch_size ({d.batch_size}) is not data.global_batch_size "
                             f"({d.global_batch_size}) / scaling.num_workers ({workers}): set one")
        d.batch_size = per_worker
        return self

    @model_validator(mode="after")
    def _validation_is_not_test(self) -> RunConfig:
        d = self.data
        if self.eval.every_epochs and not (d.val_store and d.eval_train_store):
            raise ValueError(
                "eval.every_epochs needs data.val_store and data.eval_train_store (validation "
                "never reads eval_test_store; make a val split with `clrdist data split`)")
        if d.val_store and d.val_store in (d.eval_test_store, d.eval_train_store):
            raise ValueError(f"data.val_store: {d.val_store} is also an evaluation store; "
                             "validation must be apart from eval_train_store and eval_test_store")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable dict (stored in checkpoints, stores and MLflow)."""
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, e.g. {"loss.temperature": 0.1}, for MLflow params."""
        return dict(flatten(self.to_dict()))


def flatten(d: dict[str, Any], prefix: str = ""):
    """(dotted key, value) pairs of a nested dict, e.g. ("loss.temperature", 0.1)."""
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        # loss / model: the union's tag out of the key; a key of another loss / encoder named
        named = section_error(e["loc"], e["type"], e.get("input"))
        if named:
            loc, msg = named[0], named[1] or msg
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict in place (value parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value")
    key, _, text = override.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r}: empty key")
    try:
        value = load_yaml(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse value {text!r}: {e}") from None
    node = raw
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any], source: str = "<config>", *,
                     stored: bool = False, eval_options: bool = True) -> RunConfig:
    """Validate a nested dict into a RunConfig, raising ConfigError with dotted paths.
    ``stored``: a run's stored config (``drop_foreign``: older runs stored every loss's fields).
    ``eval_options=False`` leaves ``eval.options`` untyped: typing them imports every evaluation
    named there (~5 s of CPU per process), which a training worker, handed a config the driver
    validated, never runs."""
    if stored:
        raw = drop_foreign(raw)
    try:
        return RunConfig.model_validate(raw, context={"eval_options": eval_options})
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (safe loader), apply ``--set`` overrides, validate.

    ``path=None`` starts from the built-in defaults (the demo configuration).
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: no such config file")
        try:
            loaded = load_yaml(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections")
        raw = loaded
    before = members(raw)  # an override switching loss.name / model.encoder drops the file's
    for ov in overrides or []:  # keys the new loss / encoder does not take (drop_switched)
        apply_override(raw, ov)
    drop_switched(raw, before, {ov.partition("=")[0].strip() for ov in overrides or []})
    return config_from_dict(raw, source)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
