"""The one place a run's config becomes library objects: model, loss, views, input transform.

The library packages (``data``, ``physics``, ``models``, ``losses``, ``eval``) take plain
arguments and never read a config (docs/internals.md, "Layers"); training, evaluation, the
benchmarks and the tests build what a config describes through these functions:

    model = initial_model(cfg.model, cfg.seed)      # build_model(cfg.model), seeded as training
    loss = build_loss(cfg.loss)
    views = build_views(cfg, fixed=sync_free)
    x, mask = model_inputs(particles, mask, input_transform(cfg))   # clrdist.models.encode
    encode = build_encoder(model, cfg, device="auto")               # samples -> representations

The engine (DDP / DeepSpeed) is training's own and reads the config itself:
``clrdist.train.engine.build_engine``. It is not built here because the evaluation
(``clrdist.evaluation``) imports this module and must not load training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from clrdist.config import LossConfig, ModelConfig, RunConfig
from clrdist.losses import LOSSES, Loss
from clrdist.models import ContrastiveModel, DenseEncoder, ProjectionHead, TransformerEncoder
from clrdist.models.encode import (
    Encoder,
    InputTransform,
    Representation,
    make_encoder,
    numpy_inputs,
)
from clrdist.models.prototypes import CosineClassifier, DINOHead
from clrdist.physics.augment import View, build_view

__all__ = ["ENCODERS", "HEADS", "loss_fields", "build_model", "initial_model", "build_loss",
           "build_views", "input_transform", "build_encoder", "supervised_parts"]


def _transformer(cfg: ModelConfig) -> TransformerEncoder:
    return TransformerEncoder(
        input_dim=cfg.input_dim, model_dim=cfg.model_dim, ff_dim=cfg.ff_dim, heads=cfg.heads,
        layers=cfg.layers, dropout=cfg.dropout, pooling=cfg.pooling, log_pt_bias=cfg.log_pt_bias,
        log_pt_bias_scale=cfg.log_pt_bias_scale, norm_first=cfg.norm_first, embed_pt=cfg.embed_pt,
        buckets=cfg.buckets)


def _dense(cfg: ModelConfig) -> DenseEncoder:
    return DenseEncoder(input_dim=cfg.dense_input_dim, dims=cfg.dense_dims, norm=cfg.dense_norm)


ENCODERS = {"transformer": _transformer, "dense": _dense}
# model.head -> the head: an MLP projection, or the prototype heads of DINO and ORCA
HEADS = {"dino": DINOHead, "cosine": CosineClassifier}


def build_model(cfg: ModelConfig) -> ContrastiveModel:
    """ModelConfig -> ContrastiveModel(encoder, projection head)."""
    try:
        make = ENCODERS[cfg.encoder]
    except KeyError:
        raise KeyError(f"unknown encoder {cfg.encoder!r}; known: {', '.join(sorted(ENCODERS))}") from None
    encoder = make(cfg)
    if cfg.head == "mlp":
        head = ProjectionHead(encoder.out_dim, cfg.head_dims, cfg.output_dim,
                              batchnorm=cfg.head_batchnorm)
    else:
        head = HEADS[cfg.head](encoder.out_dim, cfg.head_dims, cfg.output_dim)
    return ContrastiveModel(encoder, head)


def initial_model(cfg: ModelConfig, seed: int) -> ContrastiveModel:
    """The model exactly as training starts it (the untrained reference of every evaluation):
    ``torch.manual_seed(seed)``, then ``build_model``. Reseeds torch's global generator."""
    torch.manual_seed(seed)
    return build_model(cfg)


def loss_fields(cfg: LossConfig) -> dict[str, object]:
    """The loss class's keywords: every field of the section's union member but ``name``
    (``clrdist.config_sections``: each loss family's member holds exactly what it takes)."""
    return {f: getattr(cfg, f) for f in type(cfg).model_fields if f != "name"}


def build_loss(cfg: LossConfig) -> Loss:
    """A ``loss`` config section -> loss module; unknown name -> KeyError listing the known ones.
    ``keep_positive: null`` (the config default) leaves the denominator to the loss's published
    form (``published_keep_positive``), never to one global default."""
    try:
        cls = LOSSES[cfg.name]
    except KeyError:
        raise KeyError(f"unknown loss {cfg.name!r}; known: {', '.join(sorted(LOSSES))}") from None
    return cls(**loss_fields(cfg))


def build_views(cfg: RunConfig, *, fixed: bool | None = None) -> list[View]:
    """The run's views in order: ``augment.views``, ``augment.local_views`` (student only, DINO),
    then ``augment.anomaly_view``; ``fixed`` as in :class:`clrdist.physics.augment.View`."""
    a = cfg.augment
    specs = [*a.views, *a.local_views] + ([a.anomaly_view] if a.anomaly_view else [])
    return [build_view(v, a.strength, a.backend, fixed) for v in specs]


def input_transform(cfg: RunConfig) -> InputTransform:
    """The run's input transform: the hardest ``data.n_particles``, ``model.frame``,
    ``model.input_features``, pT / ``data.pt_scale``."""
    return InputTransform(n_particles=cfg.data.n_particles, frame=cfg.model.frame,
                          features=cfg.model.input_features, pt_scale=cfg.data.pt_scale)


def build_encoder(model: nn.Module, cfg: RunConfig, batch_size: int = 2048,
                  device: str | torch.device = "cpu", autocast: torch.dtype | str | None = "run"
                  ) -> Encoder:
    """``models.encode.make_encoder`` through the run's input transform; ``autocast="run"``:
    the run's ``scaling.precision`` (bf16 on GPUs when it trains in bf16 or auto), else a dtype
    or None (fp32)."""
    precision = cfg.scaling.precision if autocast == "run" else autocast
    return make_encoder(model, input_transform(cfg), batch_size, device, precision)


def supervised_parts(cfg: RunConfig) -> tuple[Callable[[], nn.Module], Callable]:
    """(model_factory, prepare) of the supervised reference (``eval.baselines.train_supervised``):
    a fresh encoder of the run's size, ``(x, mask) -> representation``, and the run's inputs as
    numpy arrays."""
    inputs = input_transform(cfg)
    return (lambda: Representation(build_model(cfg.model)),
            lambda particles, mask: numpy_inputs(particles, mask, inputs))
