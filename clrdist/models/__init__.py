"""Encoders and projection heads, built from plain arguments (``clrdist.factory.build_model``
turns a ``model`` config section into them)."""

from __future__ import annotations

from clrdist.models.dense import DenseEncoder
from clrdist.models.heads import ContrastiveModel, ProjectionHead
from clrdist.models.transformer import TransformerEncoder

__all__ = ["TransformerEncoder", "DenseEncoder", "ProjectionHead", "ContrastiveModel"]
