"""The naive reference: JetCLR's public-code way of doing one training step.

Written here (not copied) after the public JetCLR code's structure, to be measured side by side
with clrdist in bench/train_step.py:
- augmentations in numpy on the CPU, feature-first (B, 3, P) batches, collinear filling with a
  Python loop over jets (and over the splits of each jet), applied twice, as in the public code;
  rotation, soft smearing and translation as batched numpy (as in the public code);
- a sequence-first ``nn.TransformerEncoder`` fed an additive float mask 0.5 log(pT_j)
  materialised as a (B * heads, N, N) tensor, always on the full padded length N;
- pT-weighted sum pooling, a projection head, the SimCLR NT-Xent loss on the 2B views.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---- augmentations: (B, 3, P) numpy, pT in GeV ----------------------------------------------

def rotate_jets(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.random(batch.shape[0]) * 2 * np.pi
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    rot = np.array([[o, z, z], [z, c, -s], [z, s, c]])  # (3, 3, B)
    return np.einsum("ijk,lji->ilk", batch, rot)


def distort_jets(batch: np.ndarray, rng: np.random.Generator, strength: float = 0.1,
                 pt_clip_min: float = 0.1) -> np.ndarray:
    pt = batch[:, 0]
    shift_eta = strength * rng.standard_normal(pt.shape) / pt.clip(min=pt_clip_min)
    shift_phi = strength * rng.standard_normal(pt.shape) / pt.clip(min=pt_clip_min)
    shift_eta[pt == 0] = 0.0
    shift_phi[pt == 0] = 0.0
    return batch + np.stack([np.zeros_like(pt), shift_eta, shift_phi], 1)


def translate_jets(batch: np.ndarray, rng: np.random.Generator, width: float = 1.0) -> np.ndarray:
    mask = batch[:, 0] > 0
    out = batch.copy()
    for k in (1, 2):
        ptp = np.ptp(batch[:, k], axis=-1, keepdims=True)  # the public code includes the padding
        shift = rng.uniform(-width * ptp, width * ptp, size=(batch.shape[0], 1))
        out[:, k] = batch[:, k] + mask * shift
    return out


def collinear_fill_jets(batch: np.ndarray, rng: np.random.Generator, fill: float = 0.5) -> np.ndarray:
    """Split constituents into empty slots until max(n, fill * P) slots are used
    (docs/reference.md: fill = 0.5; the public jet_augs.py fills every empty slot, fill = 1)."""
    out = batch.copy()
    n_const = batch.shape[2]
    nzs = [int((batch[i, 0] > 0).sum()) for i in range(len(batch))]
    for k in range(len(batch)):  # per-jet Python loop, as in the public code
        n = nzs[k]
        n_split = min(max(n, int(fill * n_const)) - n, n)
        els = rng.choice(n, size=n_split, replace=False)
        rs = rng.uniform(size=n_split)
        for j in range(n_split):
            e = int(els[j])
            out[k, 0, e] = rs[j] * batch[k, 0, e]
            out[k, 0, n + j] = (1 - rs[j]) * batch[k, 0, e]
            out[k, 1, n + j] = batch[k, 1, e]
            out[k, 2, n + j] = batch[k, 2, e]
    return out


def augment_view(batch: np.ndarray, rng: np.random.Generator, fill: float = 0.5) -> np.ndarray:
    batch = collinear_fill_jets(batch, rng, fill)
    batch = collinear_fill_jets(batch, rng, fill)
    batch = rotate_jets(batch, rng)
    batch = distort_jets(batch, rng)
    return translate_jets(batch, rng)


# ---- model --------------------------------------------------------------------------------------

class ReferenceTransformer(nn.Module):
    """Sequence-first encoder with a materialised (B * heads, N, N) float attention mask."""

    def __init__(self, input_dim=3, model_dim=128, ff_dim=512, heads=4, layers=4, head_dims=(128,),
                 output_dim=128, dropout=0.1):
        super().__init__()
        self.heads = heads
        self.embedding = nn.Linear(input_dim, model_dim)
        layer = nn.TransformerEncoderLayer(model_dim, heads, ff_dim, dropout)  # batch_first=False
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        dims = [model_dim, *head_dims, output_dim]
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            mods += [nn.Linear(a, b), nn.ReLU()]
        self.head = nn.Sequential(*mods[:-1])

    def make_continuous_mask(self, pt: torch.Tensor) -> torch.Tensor:
        """pt: (B, N) -> (B * heads, N, N) additive mask 0.5 log pT_j (padding: log of 1e-10)."""
        B, N = pt.shape
        bias = 0.5 * torch.log(pt.clamp(min=1e-10))
        return bias[:, None, :].expand(B, N, N).repeat_interleave(self.heads, 0).contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3, N) feature-first, pT scaled -> (rep, z)."""
        x = x.permute(2, 0, 1)  # (N, B, 3) sequence-first
        pt = x[..., 0].T  # (B, N)
        mask = self.make_continuous_mask(pt)
        h = self.transformer(self.embedding(x), mask=mask)
        w = (pt / pt.sum(1, keepdim=True)).T[..., None]  # (N, B, 1)
        rep = (h * w).sum(0)
        return rep, self.head(rep)


def contrastive_loss(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR NT-Xent on 2B views, positive kept in the denominator (public JetCLR form)."""
    B = z_i.shape[0]
    z = F.normalize(torch.cat([z_i, z_j]), dim=1)
    sim = z @ z.T
    pos = torch.cat([torch.diag(sim, B), torch.diag(sim, -B)])
    nominator = torch.exp(pos / temperature)
    neg_mask = ~torch.eye(2 * B, dtype=torch.bool)
    denominator = (neg_mask * torch.exp(sim / temperature)).sum(1)
    return -torch.log(nominator / denominator).sum() / (2 * B)
