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

from clrdist.distributed import at_least_float32, gather_rows, unit_fp32
from clrdist.losses.base import Loss, device_generator, fp32_math

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
               head_label: torch.Tensor, labelled: torch.Tensor, n_labelled: torch.Tensor,
               world: int, margin: torch.Tensor, scale: float, temperature: float = 1.0
               ) -> dict[str, torch.Tensor]:
    """The three terms for the local rows. l1 (B, C) local logits of view 1; l2_g, l1_g (N, C)
    gathered logits; partner (B,) indices into the global batch; head_label, labelled (B,) local;
    n_labelled: labelled rows in the global batch (a 0-d tensor); margin: a 0-d tensor;
    p = softmax(cos / temperature), cos = l / scale. Fixed shapes throughout: the cross-entropy
    is computed for every row and weighted by ``labelled`` (no selection of the labelled rows)."""
    p1 = F.softmax(l1 / (scale * temperature), -1)
    p2 = F.softmax(l2_g / (scale * temperature), -1)
    pair = -torch.log((p1 * p2[partner]).sum(-1).clamp_min(1e-7)).mean()
    y = head_label.clamp_min(0)
    is_y = torch.arange(l1.shape[1], device=l1.device)[None, :] == y[:, None]
    boosted = l1 + (scale * margin).to(l1.dtype) * is_y.to(l1.dtype)
    ce_rows = F.cross_entropy(boosted, y, reduction="none")
    ce = torch.where(labelled, ce_rows, torch.zeros_like(ce_rows)).sum() * world \
        / n_labelled.clamp_min(1).to(l1.dtype)
    pbar = F.softmax(l1_g / (scale * temperature), -1).mean(0)
    entropy = -(pbar * pbar.clamp_min(1e-8).log()).sum()
    return {"loss": ce + pair - entropy, "ce": ce, "pair": pair, "entropy": entropy}


class ORCALoss(Loss):
    """forward(z1, z2, labels=..., reps=(rep1, rep2, ...)) -> {"loss", "ce", "pair", "entropy",
    "margin"}; z = classifier logits (B, C)."""

    needs_labels = True
    needs_inputs = True  # the loop passes reps= (nearest neighbours in representation space)

    def __init__(self, known_classes=(0,), labelled_fraction: float = 0.5, scale: float = 10.0,
                 temperature: float = 1.0, uncertainty_momentum: float = 0.9, gather: bool = True,
                 seed: int = 0):
        super().__init__()
        self.temperature = temperature
        self.known = [int(k) for k in known_classes]
        self.n_known = len(self.known)
        self.min_output_dim = self.n_known + 1  # the known heads and at least one novel one
        self.labelled_fraction, self.scale = labelled_fraction, scale
        self.momentum, self.gather, self.seed = uncertainty_momentum, gather, seed
        self.register_buffer("uncertainty", torch.tensor(float("nan"), dtype=torch.float64))
        self.count_steps()

    def head_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Store labels -> index of the known class (its head), -1 for every other label."""
        out = torch.full_like(labels, -1, dtype=torch.long)
        for i, k in enumerate(self.known):
            out = torch.where(labels == k, i, out)
        return out

    def forward(self, z1, z2, *more, labels=None, inputs=None, reps=None) -> dict[str, torch.Tensor]:
        if labels is None or reps is None:
            raise ValueError("ORCALoss needs labels and reps (the representations of view 1)")
        device = z1.device
        with fp32_math(device):
            l1, l2 = at_least_float32(z1), at_least_float32(z2)
            feats = unit_fp32(reps[0].detach())
            hl = self.head_labels(labels.to(device).long())
            l1_g, off = gather_rows(l1, gather=self.gather)
            l2_g, _ = gather_rows(l2, gather=self.gather)
            feats_g, _ = gather_rows(feats, gather=self.gather, grad=False)
            hl_g, _ = gather_rows(hl, gather=self.gather, grad=False)
            B, N = l1.shape[0], l1_g.shape[0]
            # the draws: on the device, from the (seed, step) stream, the same on every rank
            gen = device_generator(device, self.seed * 1_000_003 + self.step_count)
            draw = torch.rand(N, generator=gen, device=device) < self.labelled_fraction
            rand = torch.rand(N, N, generator=gen, device=device)
            labelled_g = (hl_g >= 0) & draw
            partner = orca_partners(feats_g, hl_g, labelled_g, rand)[off:off + B]
            with torch.no_grad():  # uncertainty of the unlabelled rows -> the margin
                conf = F.softmax(l1_g / (self.scale * self.temperature), -1).max(1).values
                unl = (~labelled_g).double()
                n_unl = unl.sum()
                u = 1.0 - (conf.double() * unl).sum() / n_unl.clamp_min(1)
                prev = self.uncertainty
                ema = torch.where(torch.isnan(prev), u, self.momentum * prev + (1 - self.momentum) * u)
                self.uncertainty.copy_(torch.where(n_unl > 0, ema, prev))
                margin = self.uncertainty.clamp(max=0.5).nan_to_num(0.5)
            self.tick()
            terms = orca_terms(l1, l2_g, l1_g, partner, hl, labelled_g[off:off + B],
                               labelled_g.sum(), N // B, margin, self.scale, self.temperature)
        terms["margin"] = margin
        return terms
