"""Heads that end in prototypes: DINO's projection head and ORCA's cosine classifier.

``model.head: dino`` (Caron et al. 2021): MLP (``head_dims``, GELU) -> L2-normalised bottleneck
(the last hidden width) -> weight-normalised linear layer onto ``output_dim`` prototypes (no bias,
unit-norm rows), i.e. the logits are cosines between the bottleneck and the prototypes.

``model.head: cosine`` (ORCA, Cao et al. 2022): optional MLP (``head_dims``, ReLU), then
``scale * cos(h, w_k)`` for the ``output_dim`` classes (known classes first, then novel ones);
scale = 10 as ORCA's margin loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "CosineClassifier"]


def _mlp(in_dim: int, hidden: list[int] | tuple[int, ...], act: type[nn.Module]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    d = in_dim
    for i, width in enumerate(hidden):
        layers.append(nn.Linear(d, width))
        if i < len(hidden) - 1:
            layers.append(act())
        d = width
    return nn.Sequential(*layers), d


class DINOHead(nn.Module):
    """h: (B, in_dim) -> (B, output_dim) cosines with the prototypes."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], output_dim: int):
        super().__init__()
        self.mlp, d = _mlp(in_dim, list(hidden) or [in_dim], nn.GELU)
        self.prototypes = nn.Parameter(torch.randn(output_dim, d) / d ** 0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = F.normalize(self.mlp(h), dim=-1)
        return b @ F.normalize(self.prototypes, dim=-1).T


class CosineClassifier(nn.Module):
    """h: (B, in_dim) -> (B, output_dim) = scale * cos(MLP(h), w_k)."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], output_dim: int,
                 scale: float = 10.0):
        super().__init__()
        self.mlp, d = _mlp(in_dim, hidden, nn.ReLU) if hidden else (nn.Identity(), in_dim)
        self.weight = nn.Parameter(torch.randn(output_dim, d) / d ** 0.5)
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.mlp(h), dim=-1) @ F.normalize(self.weight, dim=-1).T
