"""Dense encoder for fixed-size event vectors (CMS ADC2021: 19 objects x (pT, eta, phi) = 57).

Architecture of Metzger et al. (arXiv:2502.15926): 57-96-64-48-latent, Linear + norm +
LeakyReLU on the hidden layers, a plain Linear to the latent space (``dense_dims`` lists the
widths after the input, the last one being the representation).

The norm: ``layer`` (default) normalises each sample on its own, so N workers compute exactly
the gradient of one process on the global batch (tests/test_distributed_grad.py, 2 and 3 gloo
processes). ``batch`` is the paper's BatchNorm: its statistics are those of the batch it sees,
so with several workers they must be synchronised (SyncBatchNorm, which the DDP engine applies
on GPU); SyncBatchNorm needs CUDA, and on CPU (gloo) each worker normalises its own rows, which
is a different loss from the single-process one.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseEncoder", "NORMS"]

NORMS = {"layer": nn.LayerNorm, "batch": nn.BatchNorm1d, "none": None}


class DenseEncoder(nn.Module):
    """x: (B, D) float -> (B, dims[-1])."""

    def __init__(self, input_dim: int = 57, dims: list[int] | tuple[int, ...] = (96, 64, 48),
                 negative_slope: float = 0.01, norm: str = "layer"):
        super().__init__()
        if not dims:
            raise ValueError("dense encoder needs at least one width")
        if norm not in NORMS:
            raise KeyError(f"unknown dense norm {norm!r}; known: {list(NORMS)}")
        layers: list[nn.Module] = []
        d = input_dim
        for width in dims[:-1]:
            layers.append(nn.Linear(d, width))
            if NORMS[norm] is not None:
                layers.append(NORMS[norm](width))
            layers.append(nn.LeakyReLU(negative_slope))
            d = width
        layers.append(nn.Linear(d, dims[-1]))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
