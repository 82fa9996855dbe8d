"""Dense encoder for fixed-size event vectors (CMS ADC2021: 19 objects x (pT, eta, phi) = 57).

Architecture of Metzger et al. (arXiv:2502.15926): 57-96-64-48-latent, Linear + BatchNorm +
LeakyReLU on the hidden layers, a plain Linear to the latent space (``dense_dims`` lists the
widths after the input, the last one being the representation).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseEncoder"]


class DenseEncoder(nn.Module):
    """x: (B, D) float -> (B, dims[-1])."""

    def __init__(self, input_dim: int = 57, dims: list[int] | tuple[int, ...] = (96, 64, 48),
                 negative_slope: float = 0.01):
        super().__init__()
        if not dims:
            raise ValueError("dense encoder needs at least one width")
        layers: list[nn.Module] = []
        d = input_dim
        for width in dims[:-1]:
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.LeakyReLU(negative_slope)]
            d = width
        layers.append(nn.Linear(d, dims[-1]))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
