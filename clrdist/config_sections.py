"""The ``model`` and ``loss`` sections of a run config: discriminated unions.

``loss`` is one model per loss family, chosen by ``loss.name``; ``model`` one per encoder,
chosen by ``model.encoder``. A key the chosen member does not take (``loss.teacher_momentum``
under ``nt_xent``, ``model.heads`` under ``encoder: dense``) fails validation with the key
named instead of being accepted and ignored. ``clrdist.config`` re-exports every name here.

Calling the family base builds the member its discriminator names, so
``LossConfig(name="orca", known_classes=[0, 1])`` is an :class:`ORCALossConfig` and
``ModelConfig(encoder="dense")`` a :class:`DenseModelConfig`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    # Unknown keys fail (typos must never silently become defaults); assignments are validated;
    # no float is NaN or infinite (optim.lr=.inf passed and trained nothing)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class _Family(_Section):
    """A union's base: calling it builds the member its discriminator key names."""

    KEY: ClassVar[str]  # the discriminator field
    DEFAULT: ClassVar[str]  # its value when the section leaves it out
    LABEL: ClassVar[str]  # what a value of it names, in messages

    def __new__(cls, *args: Any, **data: Any):  # noqa: D102 - dispatch, see the class docstring
        if cls in (LossConfig, ModelConfig):
            cls = _member(cls, data.get(cls.KEY, cls.DEFAULT))
        return super().__new__(cls)

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any):  # noqa: D102
        if cls in (LossConfig, ModelConfig):
            cls = _member(cls, values.get(cls.KEY, cls.DEFAULT))
        return super().model_construct(_fields_set, **values)


# ---- loss (clrdist.losses.LOSSES; factory.build_loss passes every field but name) ----

CONTRASTIVE = ("nt_xent", "anomalyclr", "anomalyclr_plus", "supcon")


class LossConfig(_Family):
    """Fields every loss takes; a family adds its own."""

    KEY, DEFAULT, LABEL = "name", "nt_xent", "loss"
    name: str = "nt_xent"  # registered loss (see clrdist.losses.LOSSES)
    temperature: float = Field(0.1, gt=0)  # tau in exp(s/tau); DINO: the student's (0.1)
    gather: bool = True  # negatives (DINO: the centre's batch means) all-gathered across workers


class ContrastiveLossConfig(LossConfig):
    """nt_xent, anomalyclr, anomalyclr_plus, supcon."""

    keep_positive: bool | None = None  # denominator keeps the positive; None = the loss's published form
    # + norm_penalty x mean |z| of the first view's projection before it is normalised: the one
    # term that acts on |z| (DarkCLR's public code: 1e-3, its anomaly score is |z|); 0: off
    norm_penalty: float = Field(0.0, ge=0)
    # + anomaly_norm x mean softplus(log|r| - log|r*|) over the physical views' representations r
    # and the anomaly view's r*: trains the score DarkCLR reads (|z| of the representation) to
    # flag the anomaly view (clrdist's, not the paper's: docs/learning.md); anomaly losses only
    anomaly_norm: float = Field(0.0, ge=0)

    @field_validator("name")
    @classmethod
    def _contrastive(cls, name: str) -> str:
        if name not in CONTRASTIVE:
            raise ValueError(f"{name!r} is not a contrastive loss ({', '.join(CONTRASTIVE)})")
        return name

    @model_validator(mode="after")
    def _anomaly_norm_needs_an_anomaly_view(self) -> ContrastiveLossConfig:
        if self.anomaly_norm and self.name not in ("anomalyclr", "anomalyclr_plus"):
            raise ValueError(f"anomaly_norm needs a loss with an anomaly view (anomalyclr, "
                             f"anomalyclr_plus), not {self.name!r}")
        return self


class DINOLossConfig(LossConfig):
    """name: dino."""

    name: Literal["dino"] = "dino"
    teacher_temperature: float = Field(0.04, gt=0)  # DINO teacher sharpening temperature
    centre_momentum: float = Field(0.9, ge=0, lt=1)  # DINO centre EMA over global batch means
    # DINO teacher EMA: teacher_momentum at step 0, rising (cosine) to teacher_momentum_end at the
    # last step: 1 in DINO (hundreds of epochs); below 1, a short run's teacher keeps following
    # its student (docs/selfsup.md)
    teacher_momentum: float = Field(0.996, ge=0, le=1)
    teacher_momentum_end: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _momentum_rises(self) -> DINOLossConfig:
        if self.teacher_momentum_end < self.teacher_momentum:
            raise ValueError(f"teacher_momentum_end ({self.teacher_momentum_end}) is below "
                             f"teacher_momentum ({self.teacher_momentum}): the schedule rises")
        return self


class ORCALossConfig(LossConfig):
    """name: orca; model.output_dim = len(known_classes) + number of novel classes."""

    name: Literal["orca"] = "orca"
    known_classes: list[int] = Field(default_factory=lambda: [0])  # store labels with known class
    labelled_fraction: float = Field(0.5, gt=0, le=1)  # known-class rows labelled per step


LOSS_SECTIONS: dict[str, type[LossConfig]] = {
    **dict.fromkeys(CONTRASTIVE, ContrastiveLossConfig),
    "dino": DINOLossConfig, "orca": ORCALossConfig}


# ---- model (factory.ENCODERS / HEADS) ----

class ModelConfig(_Family):
    """Fields of every encoder: inputs, projection head, compilation."""

    KEY, DEFAULT, LABEL = "encoder", "transformer", "encoder"
    encoder: Literal["transformer", "dense"] = "transformer"  # set encoder or 57-feature MLP
    # per-particle inputs: pt = [pT/data.pt_scale, d_eta, d_phi] (JetCLR); log = [z, ln z, ln pT,
    # d_eta, d_phi, Delta R] scaled to order one (Particle Transformer); ptfrac = log without
    # ln pT (5 columns, no absolute scale: for the m_jj bump hunt); boost = ptfrac with angles in
    # units of the jet's angular size m/pT (no absolute angle either); physics/frame.py
    input_features: Literal["pt", "log", "ptfrac", "boost"] = "pt"
    frame: Literal["jet", "event"] = "jet"  # jet: centre on pT-weighted centroid; event: absolute
    head_dims: list[int] = Field(default_factory=lambda: [64])  # projection head hidden widths
    output_dim: int = Field(32, gt=0)  # loss-space dimension (latent dimension for sweeps)
    head_batchnorm: bool = False  # BatchNorm in the projection (expander) head's hidden layers
    # mlp: projection head; dino: MLP -> L2-normed bottleneck -> output_dim prototypes (DINO);
    # cosine: 10 x cosine classifier over output_dim = known + novel classes (ORCA)
    head: Literal["mlp", "dino", "cosine"] = "mlp"
    compile: bool = False  # torch.compile the encoder (same results; faster on GPUs after warm-up)


class TransformerModelConfig(ModelConfig):
    """encoder: transformer (the set encoder of JetCLR / DarkCLR)."""

    encoder: Literal["transformer"] = "transformer"
    input_dim: int = Field(3, gt=0)  # model input width: 3 for input_features pt, 6 for log (+ extras)
    model_dim: int = Field(64, gt=0)  # transformer width (JetCLR: 1000, DarkCLR: 128)
    ff_dim: int = Field(128, gt=0)  # feed-forward width
    heads: int = Field(4, gt=0)  # attention heads; must divide model_dim
    layers: int = Field(2, gt=0)  # transformer layers
    dropout: float = Field(0.1, ge=0, lt=1)  # dropout in the encoder
    # pt_sum is needed, not enough, for IR/C safety (docs/core.md); sum: the plain sum over
    # constituents (DarkCLR's public code), whose |rep| grows with multiplicity (not IR safe)
    pooling: Literal["pt_sum", "mean", "sum"] = "pt_sum"
    log_pt_bias: bool = False  # JetCLR additive attention bias 0.5 log(pT_j)
    log_pt_bias_scale: float = Field(0.5, gt=0)  # bias = scale * log(pT_j); 1.0 weights keys by pT
    embed_pt: bool = True  # pT enters the constituent embedding; False + bias scale 1 -> IR/C safe
    norm_first: bool = True  # pre-norm (True) or post-norm (False) transformer blocks
    buckets: int = Field(1, ge=1)  # encode each batch in this many multiplicity groups (exact, faster)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerModelConfig:
        if self.model_dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide model_dim ({self.model_dim})")
        return self


class DenseModelConfig(ModelConfig):
    """encoder: dense (an MLP on flattened event features, ADC2021)."""

    encoder: Literal["dense"] = "dense"
    dense_dims: list[int] = Field(default_factory=lambda: [96, 64, 48])  # dense encoder widths
    dense_input_dim: int = Field(57, gt=0)  # flattened event features (ADC2021: 19 objects x 3)
    # dense hidden-layer norm: layer (exact under any worker count), batch (the paper's; synced on
    # GPU only: on CPU each worker normalises its own rows), none
    dense_norm: Literal["layer", "batch", "none"] = "layer"


MODEL_SECTIONS: dict[str, type[ModelConfig]] = {
    "transformer": TransformerModelConfig, "dense": DenseModelConfig}
# section -> (its family base, discriminator value -> member)
FAMILIES: dict[str, tuple[type[_Family], dict[str, type[_Section]]]] = {
    "loss": (LossConfig, LOSS_SECTIONS), "model": (ModelConfig, MODEL_SECTIONS)}


def _member(base: type[_Family], value: Any) -> type[_Section]:
    sections = FAMILIES["loss" if base is LossConfig else "model"][1]
    if isinstance(value, str) and value in sections:
        return sections[value]
    raise ValueError(f"unknown {base.LABEL} {value!r}; known: {', '.join(sorted(sections))}")


def _tag(base: type[_Family]):
    sections = FAMILIES["loss" if base is LossConfig else "model"][1]

    def tag(v: Any) -> str | None:
        if isinstance(v, BaseModel):
            return getattr(v, base.KEY, None)
        if not isinstance(v, dict):
            return base.DEFAULT  # not a mapping: the member's own "valid dictionary" error
        value = v.get(base.KEY, base.DEFAULT)
        return value if isinstance(value, str) and value in sections else None
    return tag


def _union(base: type[_Family]) -> Any:
    sections = FAMILIES["loss" if base is LossConfig else "model"][1]
    members = tuple(Annotated[cls, Tag(key)] for key, cls in sections.items())
    return Annotated[Union[members], Discriminator(  # noqa: UP007 - a runtime tuple of members
        _tag(base), custom_error_type=f"unknown_{base.LABEL}",
        custom_error_message=f"unknown {base.LABEL}; known: {', '.join(sorted(sections))}")]


AnyLoss = _union(LossConfig)  # RunConfig.loss
AnyModel = _union(ModelConfig)  # RunConfig.model


def section_error(loc: tuple[Any, ...], kind: str, given: Any) -> tuple[str, str] | None:
    """(dotted key, message) for a validation error under ``loss`` or ``model``, with the
    union's tag taken out of the key; None for errors elsewhere."""
    if not loc or loc[0] not in FAMILIES:
        return None
    base, sections = FAMILIES[loc[0]]
    if kind == f"unknown_{base.LABEL}":
        value = given.get(base.KEY) if isinstance(given, dict) else given
        return (f"{loc[0]}.{base.KEY}",
                f"unknown {base.LABEL} {value!r}; known: {', '.join(sorted(sections))}")
    if len(loc) < 2 or loc[1] not in sections:
        return None
    member, rest = sections[loc[1]], loc[2:]
    key = ".".join(str(p) for p in (loc[0], *rest))
    if kind != "extra_forbidden" or len(rest) != 1:
        return key, ""
    if not any(rest[0] in cls.model_fields for cls in sections.values()):
        return key, "unknown key"
    return key, (f"not a field of {base.LABEL} {loc[1]!r} "
                 f"(its fields: {', '.join(member.model_fields)})")


def drop_foreign(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored run config (``RunConfig.to_dict`` before the sections were unions held every
    loss's and encoder's fields) without the fields its loss / encoder does not take: they
    did nothing in that run. A new dict; ``raw`` is left as it is."""
    raw = dict(raw)
    for section, (base, sections) in FAMILIES.items():
        part = raw.get(section)
        value = part.get(base.KEY, base.DEFAULT) if isinstance(part, dict) else None
        member = sections.get(value) if isinstance(value, str) else None
        if member is None:
            continue
        every = {f for cls in sections.values() for f in cls.model_fields}
        raw[section] = {k: v for k, v in part.items() if k in member.model_fields or k not in every}
    return raw


def members(raw: dict[str, Any]) -> dict[str, type[_Section] | None]:
    """section -> the union member a raw config's ``loss`` / ``model`` selects (None: none)."""
    out: dict[str, type[_Section] | None] = {}
    for section, (base, sections) in FAMILIES.items():
        part = raw.get(section, {})
        value = part.get(base.KEY, base.DEFAULT) if isinstance(part, dict) else None
        out[section] = sections.get(value) if isinstance(value, str) else None
    return out


def drop_switched(raw: dict[str, Any], before: dict[str, type[_Section] | None],
                  overridden: set[str]) -> None:
    """After ``--set loss.name=dino`` (or ``model.encoder=...``) on a file written for another
    member: drop the file's keys of that member the new one does not take (``keep_positive``
    of a contrastive file under dino); keys the overrides set themselves are kept (and fail)."""
    for section, after in members(raw).items():
        was, part = before.get(section), raw.get(section)
        if was is None or after is None or after is was or not isinstance(part, dict):
            continue
        for key in [k for k in part if k in was.model_fields and k not in after.model_fields
                    and f"{section}.{k}" not in overridden]:
            del part[key]
