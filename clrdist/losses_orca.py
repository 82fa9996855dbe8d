"""ORCA: open-world semi-supervised learning (Cao, Brbic, Leskovec, arXiv:2102.03526).

Some classes are known and partly labelled (for ADC2021-layout events: the SM processes), the
rest of the data is unlabelled and may hold novel classes (the BSM signals). The model is the
encoder plus a cosine classifier over C = K_known + K_novel heads (``model.head: cosine``,
``model.output_dim`` = C, known classes first in the order of ``loss.known_classes``), logits
l = s cos(h, w_k), s = 10. With p = softmax(l / s) (the softmax of the raw cosines, as ORCA's
code) for the first view and p' for the second:

- supervised cross-entropy with the uncertainty-adaptive margin on the labelled rows:
  CE(l + s u 1[k = y], y), u = min(EMA of the mean uncertainty 1 - max_k p_k of the unlabelled
  rows of the global batch, 0.5): ORCA's negative margin, large while the novel classes are
  uncertain, so that the known classes are not learnt faster than the novel ones;
- the pairwise objective -log(p_i . p'_j(i)): j(i) a random other labelled row of the global
  batch with the same label (i itself if none) for labelled i, else the nearest neighbour of i
  (cosine of the detached representations) among all other rows of the global batch;
- the entropy regulariser -H(mean_i p_i) over the global batch (all heads get used).

L = CE + pair - H. Labelled: rows whose store label is in ``known_classes``, each kept with
probability ``labelled_fraction`` per step (ORCA labels a fixed half of the known-class samples;
here the draw is per step, from a generator seeded by (seed, step), identical on every rank).
Distribution: logits, representations and labels are all-gathered; each rank's terms are its
local rows' share of the global means, so DDP's gradient average is the single-process gradient
on the global batch (tests/test_orca.py, two gloo processes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clrdist.distributed import all_gather_nograd, all_gather_with_grad, get_rank, get_world_size
from clrdist.losses_dino import at_least_float32

__all__ = ["orca_partners", "orca_terms", "ORCALoss"]


def orca_partners(feats: torch.Tensor, head_label: torch.Tensor, labelled: torch.Tensor,
                  rand: torch.Tensor) -> torch.Tensor:
    """Partner index (N,) of every row of the global batch. feats (N, D) unit rows, head_label
    (N,) (-1 not a known class), labelled (N,) bool, rand (N, N) uniform draws (the random
    choice among same-label rows: the candidate with the largest draw)."""
    N = feats.shape[0]
    eye = torch.eye(N, dtype=torch.bool, device=feats.device)
    sim = (feats @ feats.T).masked_fill(eye, float("-inf"))
    nearest = sim.argmax(1)
    same = (head_label[:, None] == head_label[None, :]) & labelled[:, None] & labelled[None, :] & ~eye
    pick = torch.where(same, rand, torch.full_like(rand, -1.0)).argmax(1)
    own = torch.arange(N, device=feats.device)
    return torch.where(labelled, torch.where(same.any(1), pick, own), nearest)


def orca_terms(l1: torch.Tensor, l2_g: torch.Tensor, l1_g: torch.Tensor, partner: torch.Tensor,
               head_label: torch.Tensor, labelled: torch.Tensor, n_labelled: int, world: int,
               margin: float, scale: float, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The three terms for the local rows. l1 (B, C) local logits of view 1; l2_g, l1_g (N, C)
    gathered logits; partner (B,) indices into the global batch; head_label, labelled (B,) local;
    n_labelled: labelled rows in the global batch; p = softmax(cos / temperature), cos = l / scale."""
    p1 = F.softmax(l1 / (scale * temperature), -1)
    p2 = F.softmax(l2_g / (scale * temperature), -1)
    pair = -torch.log((p1 * p2[partner]).sum(-1).clamp_min(1e-7)).mean()
    rows = labelled.nonzero().squeeze(1)
    if rows.numel():
        y = head_label[rows]
        boosted = l1[rows] + scale * margin * F.one_hot(y, l1.shape[1]).to(l1.dtype)
        ce = F.cross_entropy(boosted, y, reduction="sum") * world / max(n_labelled, 1)
    else:
        ce = l1.sum() * 0.0
    pbar = F.softmax(l1_g / (scale * temperature), -1).mean(0)
    entropy = -(pbar * pbar.clamp_min(1e-8).log()).sum()
    return {"loss": ce + pair - entropy, "ce": ce, "pair": pair, "entropy": entropy}


class ORCALoss(nn.Module):
    """forward(z1, z2, labels=..., reps=(rep1, rep2, ...)) -> {"loss", "ce", "pair", "entropy",
    "margin"}; z = classifier logits (B, C)."""

    needs_labels = True
    needs_anomaly_view = False
    needs_inputs = True  # the loop passes reps= (nearest neighbours in representation space)
    multi_view = False

    def __init__(self, known_classes=(0,), labelled_fraction: float = 0.5, scale: float = 10.0,
                 temperature: float = 1.0, uncertainty_momentum: float = 0.9, gather: bool = True,
                 seed: int = 0):
        super().__init__()
        self.temperature = temperature
        self.known = [int(k) for k in known_classes]
        self.n_known = len(self.known)
        self.labelled_fraction, self.scale = labelled_fraction, scale
        self.momentum, self.gather, self.seed = uncertainty_momentum, gather, seed
        self.register_buffer("uncertainty", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg) -> ORCALoss:
        return cls(known_classes=cfg.known_classes, labelled_fraction=cfg.labelled_fraction,
                   temperature=cfg.temperature, gather=cfg.gather)

    def head_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Store labels -> index of the known class (its head), -1 for every other label."""
        out = torch.full_like(labels, -1, dtype=torch.long)
        for i, k in enumerate(self.known):
            out[labels == k] = i
        return out

    def forward(self, z1, z2, *more, labels=None, inputs=None, reps=None) -> dict[str, torch.Tensor]:
        if labels is None or reps is None:
            raise ValueError("ORCALoss needs labels and reps (the representations of view 1)")
        l1, l2 = at_least_float32(z1), at_least_float32(z2)
        feats = F.normalize(at_least_float32(reps[0].detach()), dim=-1)
        hl = self.head_labels(labels.to(l1.device).long())
        world = get_world_size() if self.gather else 1
        if world > 1:
            l1_g, l2_g = all_gather_with_grad(l1), all_gather_with_grad(l2)
            feats_g, hl_g = all_gather_nograd(feats), all_gather_nograd(hl)
        else:
            l1_g, l2_g, feats_g, hl_g = l1, l2, feats, hl
        B, N = l1.shape[0], l1_g.shape[0]
        off = get_rank() * B if world > 1 else 0
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.step))
        draw = torch.rand(N, generator=gen).to(l1.device) < self.labelled_fraction
        rand = torch.rand(N, N, generator=gen).to(l1.device)
        labelled_g = (hl_g >= 0) & draw
        partner = orca_partners(feats_g, hl_g, labelled_g, rand)[off:off + B]
        with torch.no_grad():  # uncertainty of the unlabelled rows -> the margin
            conf = F.softmax(l1_g / (self.scale * self.temperature), -1).max(1).values
            unl = ~labelled_g
            if unl.any():
                u = 1.0 - conf[unl].double().mean()
                prev = self.uncertainty
                self.uncertainty.copy_(torch.where(torch.isnan(prev), u,
                                                   self.momentum * prev + (1 - self.momentum) * u))
            margin = float(self.uncertainty.clamp(max=0.5).nan_to_num(0.5))
            self.step += 1
        terms = orca_terms(l1, l2_g, l1_g, partner, hl, labelled_g[off:off + B],
                           int(labelled_g.sum()), world, margin, self.scale, self.temperature)
        terms["margin"] = torch.tensor(margin)
        return terms
