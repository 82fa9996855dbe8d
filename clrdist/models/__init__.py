"""Encoders, projection heads and ``build_model`` (the one place ModelConfig becomes arguments)."""

from __future__ import annotations

import torch

from clrdist.config import ModelConfig
from clrdist.models.dense import DenseEncoder
from clrdist.models.heads import ContrastiveModel, ProjectionHead
from clrdist.models.transformer import TransformerEncoder

__all__ = ["TransformerEncoder", "DenseEncoder", "ProjectionHead", "ContrastiveModel",
           "ENCODERS", "build_model", "initial_model"]


def _transformer(cfg: ModelConfig) -> TransformerEncoder:
    return TransformerEncoder(
        input_dim=cfg.input_dim, model_dim=cfg.model_dim, ff_dim=cfg.ff_dim, heads=cfg.heads,
        layers=cfg.layers, dropout=cfg.dropout, pooling=cfg.pooling, log_pt_bias=cfg.log_pt_bias,
        log_pt_bias_scale=cfg.log_pt_bias_scale, norm_first=cfg.norm_first, embed_pt=cfg.embed_pt,
        buckets=cfg.buckets)


def _dense(cfg: ModelConfig) -> DenseEncoder:
    return DenseEncoder(input_dim=cfg.dense_input_dim, dims=cfg.dense_dims, norm=cfg.dense_norm)


ENCODERS = {"transformer": _transformer, "dense": _dense}


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
    else:  # prototype heads of DINO and ORCA (clrdist.models.prototypes)
        from clrdist.models.prototypes import CosineClassifier, DINOHead

        head = {"dino": DINOHead, "cosine": CosineClassifier}[cfg.head](
            encoder.out_dim, cfg.head_dims, cfg.output_dim)
    return ContrastiveModel(encoder, head)


def initial_model(cfg: ModelConfig, seed: int) -> ContrastiveModel:
    """The model exactly as training starts it (the untrained reference of every evaluation):
    ``torch.manual_seed(seed)``, then ``build_model``. Reseeds torch's global generator."""
    torch.manual_seed(seed)
    return build_model(cfg)
