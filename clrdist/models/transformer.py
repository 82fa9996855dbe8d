"""Permutation-invariant transformer set encoder for jets (constituents) and events (objects).

Attention is ``torch.nn.functional.scaled_dot_product_attention`` with a key-padding mask
broadcast as (B, 1, 1, P) -- never a materialised (B*heads, P, P) matrix. Optional JetCLR
attention bias ``scale * log(pT_j)`` on the keys: with it, a zero-pT particle gets attention
weight exactly 0 (infrared safety); with scale 1 and ``embed_pt=False`` every key is weighted
linearly in pT, which together with pT-weighted pooling makes the representation collinear
safe as well (see docs/core.md for the table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerEncoder", "key_bias", "trim_padding"]


def trim_padding(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucketing by multiplicity: move real slots to the front of each row (exact, the encoder
    is permutation invariant) and drop the slots that are padding in every row of the batch."""
    B, P = mask.shape
    if B == 0 or P == 0:
        return x, mask
    n = mask.sum(1)
    prefix = torch.arange(P, device=mask.device)[None, :] < n[:, None]
    if not torch.equal(prefix, mask):  # e.g. the ADC2021 event layout, or dropped constituents
        order = (~mask).to(torch.int8).argsort(dim=1, stable=True)
        x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        mask = prefix
    keep = max(int(n.max()), 1)
    return x[:, :keep], mask[:, :keep]


def key_bias(pt: torch.Tensor, mask: torch.Tensor, log_pt_bias: bool,
             scale: float = 0.5) -> torch.Tensor:
    """Attention mask for SDPA, shape (B, 1, 1, P): bool (True = attend) or, with the log-pT
    bias, float (scale * log pT_j, -inf for padding and zero-pT keys).

    A row with no valid key (fully padded sample) attends to every slot instead, so that SDPA
    never normalises over an empty set (NaN); pooling gives such rows zero weight anyway.
    """
    if log_pt_bias:
        valid = mask & (pt > 0)
        empty = ~valid.any(1, keepdim=True)
        valid = valid | empty
        logpt = torch.log(pt.clamp_min(torch.finfo(pt.dtype).tiny))
        bias = torch.where(empty, torch.zeros_like(pt), scale * logpt)
        bias = bias.masked_fill(~valid, float("-inf"))
        return bias[:, None, None, :]
    empty = ~mask.any(1, keepdim=True)
    return (mask | empty)[:, None, None, :]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout; on the CPU with a cheaper mask than ``F.dropout``'s Bernoulli sampling.

    The CPU mask compares random bytes (eight per 64-bit draw of the default generator, so
    ``torch.manual_seed`` still governs it) with round(256 p): the drop probability is p rounded
    to a multiple of 1/256 (used only where that is within 5% of p, e.g. 0.1 -> 0.1016) and the
    survivors are scaled by 1 / (1 - that), so the expectation is kept. Cheaper than
    ``F.dropout`` (forward + backward) on bf16 activations, where dropout's random numbers are a
    large part of a CPU training step (README, Performance). Elsewhere: ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    thr = round(p * 256)
    if x.device.type != "cpu" or not 0 < thr < 256 or abs(thr / 256 - p) > 0.05 * p:
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    keep = bits.view(torch.uint8)[:n].view(x.shape) >= thr
    return x * keep.to(x.dtype).mul_(256.0 / (256 - thr))


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor,
              p: float, training: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, dropout p on the weights when training.

    SDPA without dropout (fused kernels); with dropout on the CPU, the same computation spelled
    out (SDPA's own path there is this math anyway) with the cheaper dropout mask.
    """
    if not training or p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                              dropout_p=p if training else 0.0)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    else:
        scores = scores + attn_mask
    return dropout(torch.softmax(scores, -1), p, True) @ v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, P, D = h.shape
        q, k, v = self.qkv(h).view(B, P, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        o = attention(q, k, v, attn_mask, self.dropout, self.training)
        return self.out(o.transpose(1, 2).reshape(B, P, D))


class Block(nn.Module):
    def __init__(self, dim: int, ff_dim: int, heads: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.attn = SelfAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), Dropout(dropout),
                                nn.Linear(ff_dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop1 = Dropout(dropout)
        self.drop2 = Dropout(dropout)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            h = h + self.drop1(self.attn(self.norm1(h), attn_mask))
            return h + self.drop2(self.ff(self.norm2(h)))
        h = self.norm1(h + self.drop1(self.attn(h, attn_mask)))
        return self.norm2(h + self.drop2(self.ff(h)))


class TransformerEncoder(nn.Module):
    """x: (B, P, F) float, x[..., 0] the (scaled) pT; mask: (B, P) bool -> (B, model_dim).

    pooling: "pt_sum" (sum of constituent outputs weighted by pT_i / sum pT), "mean" (masked) or
    "sum" (masked, unweighted: DarkCLR's public code; |rep| then grows with the multiplicity).
    buckets > 1 encodes the batch in that many groups of similar multiplicity (less padding).

    ``trim`` (attribute): cut each batch (bucket) to its longest sample. That reads the
    multiplicities on the host, a sync per forward on a GPU, where padded slots cost little: None
    (default) trims on the CPU only; True / False force it (the sync-free step sets False).
    """

    def __init__(self, input_dim: int = 3, model_dim: int = 64, ff_dim: int = 128, heads: int = 4,
                 layers: int = 2, dropout: float = 0.1, pooling: str = "pt_sum",
                 log_pt_bias: bool = False, log_pt_bias_scale: float = 0.5,
                 norm_first: bool = True, embed_pt: bool = True, buckets: int = 1):
        super().__init__()
        self.buckets = buckets  # multiplicity buckets per forward (1: trim to the batch maximum)
        self.trim: bool | None = None  # trim padding per batch (None: on the CPU only)
        if model_dim % heads:
            raise ValueError(f"heads ({heads}) must divide model_dim ({model_dim})")
        if pooling not in ("pt_sum", "mean", "sum"):
            raise ValueError(f"unknown pooling {pooling!r}; known: pt_sum, mean, sum")
        self.pooling = pooling
        self.log_pt_bias = log_pt_bias
        self.log_pt_bias_scale = log_pt_bias_scale
        self.embed_pt = embed_pt
        self.embed = nn.Linear(input_dim if embed_pt else input_dim - 1, model_dim)
        self.blocks = nn.ModuleList(Block(model_dim, ff_dim, heads, dropout, norm_first)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(model_dim) if norm_first else nn.Identity()
        self.out_dim = model_dim

    def _trims(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" if self.trim is None else self.trim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        trim = self._trims(x)
        if trim and self.buckets > 1 and B >= 2 * self.buckets:
            # Bucketing: samples sorted by multiplicity, encoded in groups, each trimmed to its
            # own longest sample; exact, since samples never interact inside the encoder.
            order = mask.sum(1).argsort()
            reps = [self._encode(x[idx], mask[idx], True) for idx in order.chunk(self.buckets)]
            return torch.cat(reps)[order.argsort()]
        return self._encode(x, mask, trim)

    def _encode(self, x: torch.Tensor, mask: torch.Tensor, trim: bool) -> torch.Tensor:
        if trim:
            x, mask = trim_padding(x, mask)
        pt = x[..., 0]
        attn_mask = key_bias(pt, mask, self.log_pt_bias, self.log_pt_bias_scale)
        h = self.embed(x if self.embed_pt else x[..., 1:])
        for block in self.blocks:
            h = block(h, attn_mask)
        h = self.norm(h)
        if self.pooling == "pt_sum":
            w = pt * mask
            w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        else:  # mean or sum over the real slots
            w = mask.to(h.dtype)
            if self.pooling == "mean":
                w = w / w.sum(1, keepdim=True).clamp_min(1.0)
        return torch.einsum("bp,bpd->bd", w.to(h.dtype), h)
