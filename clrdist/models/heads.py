"""Projection (expander) heads and the model that pairs an encoder with one.

Downstream evaluations use the representation (encoder output), the loss sees the head output.
"""

from __future__ import annotations

import torch
from torch import nn

from clrdist.models.dense import DenseEncoder

__all__ = ["ProjectionHead", "ContrastiveModel"]


class ProjectionHead(nn.Module):
    """h: (B, in_dim) -> (B, output_dim): Linear + ReLU per hidden width, then Linear.

    With ``batchnorm`` the hidden layers are Linear + BatchNorm + ReLU (a VICReg-style expander).
    """

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], output_dim: int,
                 batchnorm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for width in hidden:
            layers.append(nn.Linear(d, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            d = width
        layers.append(nn.Linear(d, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ContrastiveModel(nn.Module):
    """forward(x, mask) -> (rep, z); represent(x, mask) -> rep.

    x: (B, P, F) with mask (B, P) bool for the transformer; for the dense encoder either
    (B, P, F) (padding zeroed, then flattened to (B, P*F)) or already (B, D).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def represent(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.encoder, DenseEncoder):
            if x.dim() == 3:
                if mask is not None:
                    x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
                x = x.flatten(1)
            return self.encoder(x)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return self.encoder(x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        rep = self.represent(x, mask)
        return rep, self.head(rep)
