"""Contrastive losses, computed for the LOCAL rows against ALL-GATHERED columns.

Three layers, as in STYLE.md: the gather (``_columns``), logits and targets (``_logits``), and
the pure equations (``nt_xent``, ``anomalyclr``, ``anomalyclr_plus``, ``supcon``). Anchors are
both views of every local sample (2B rows); columns are both views of every sample in the
global batch (2N, N = world * B). Memory is O(B_local x B_global).

Each rank's loss is the mean over its 2B anchors; DDP averages parameter gradients over ranks,
and the gather's backward sums the column gradients over ranks, so every parameter gradient is
that of the single-process loss (mean over all 2N anchors) on the concatenated global batch.

Precision: rows are normalised in fp32 and the logits and the loss computed with autocast off,
so that a bf16 forward still gets fp32 logits at tau = 0.1.

Notation (docs/reference.md): s = cosine similarity, tau = temperature, z_i, z'_i the two views,
z*_i the anomaly-augmented view.
"""

from __future__ import annotations

import torch

from clrdist.diagnostics import collapse_value
from clrdist.distributed import gather_rows, unit_fp32
from clrdist.losses.base import Loss, fp32_math

__all__ = ["nt_xent", "anomalyclr", "anomalyclr_plus", "supcon", "anomaly_norm_push", "NTXentLoss",
           "AnomalyCLRLoss", "AnomalyCLRPlusLoss", "SupConLoss"]


# ---- gather, logits and targets ---------------------------------------------------------------

def _columns(z1: torch.Tensor, z2: torch.Tensor, gather: bool):
    """Normalised local anchors (2B, D), global columns (2N, D), this rank's row offset, N."""
    z1, z2 = unit_fp32(z1), unit_fp32(z2)
    anchors = torch.cat([z1, z2], 0)
    g1, offset = gather_rows(z1, gather=gather)
    g2, _ = gather_rows(z2, gather=gather)
    return anchors, torch.cat([g1, g2], 0), offset, g1.shape[0]


def _logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool):
    """logits (2B, 2N) = s(anchor, column) / tau, index of each anchor's own column and of its
    positive (the other view of the same sample), and the offset / N of the gather."""
    anchors, cols, offset, n = _columns(z1, z2, gather)
    B = z1.shape[0]
    logits = anchors @ cols.T / temperature
    i = torch.arange(B, device=z1.device) + offset
    self_idx = torch.cat([i, i + n])
    pos_idx = torch.cat([i + n, i])
    return logits, self_idx, pos_idx, anchors, offset, n


def _mask_cols(logits: torch.Tensor, *idx: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(logits.shape[0], device=logits.device)
    out = logits.clone()
    for ix in idx:
        out[rows, ix] = float("-inf")
    return out


def _contrast(z1, z2, temperature, keep_positive, gather):
    """(-log softmax of the positive per anchor (2B,), the anchors): the NT-Xent core."""
    logits, self_idx, pos_idx, anchors, *_ = _logits(z1, z2, temperature, gather)
    rows = torch.arange(logits.shape[0], device=logits.device)
    pos = logits[rows, pos_idx]
    masked = _mask_cols(logits, self_idx) if keep_positive else _mask_cols(logits, self_idx, pos_idx)
    return torch.logsumexp(masked, 1) - pos, anchors


# ---- the equations ----------------------------------------------------------------------------

def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float, keep_positive: bool = True,
            gather: bool = True) -> torch.Tensor:
    """NT-Xent. z1, z2: (B, D) projections of the two views of the local samples -> scalar.

    keep_positive=True: SimCLR / public JetCLR code, denominator = all columns but the anchor.
    keep_positive=False: decoupled form, the positive is dropped from the denominator too:
      L_i = -log( exp(s(z_i, z'_i)/tau) / sum_{j != i} [exp(s(z_i, z_j)/tau) + exp(s(z_i, z'_j)/tau)] )
    """
    with fp32_math(z1.device):
        return _contrast(z1, z2, temperature, keep_positive, gather)[0].mean()


def _anomaly_sim(anchors: torch.Tensor, z_anom: torch.Tensor) -> torch.Tensor:
    """s(anchor, z*_i) / 1 for the 2B local anchors (both views of sample i share z*_i)."""
    za = unit_fp32(z_anom)
    return (anchors * torch.cat([za, za], 0)).sum(-1)


def anomalyclr(z1: torch.Tensor, z2: torch.Tensor, z_anom: torch.Tensor, *, temperature: float,
               keep_positive: bool = False, gather: bool = True) -> dict[str, torch.Tensor]:
    """AnomalyCLR: L_i = -log( exp([s(z_i, z'_i) - s(z_i, z*_i)]/tau)
                              / sum_{j != i} [exp(s(z_i, z_j)/tau) + exp(s(z_i, z'_j)/tau)] ),
    averaged over both views as anchors: decoupled NT-Xent + s(z_i, z*_i)/tau. The published
    form is keep_positive=False; True adds exp(s(z_i, z'_i)/tau) to the denominator."""
    with fp32_math(z1.device):
        per_anchor, anchors = _contrast(z1, z2, temperature, keep_positive, gather)
        contrastive = per_anchor.mean()
        repel = (_anomaly_sim(anchors, z_anom) / temperature).mean()
        return {"loss": contrastive + repel, "contrastive": contrastive, "anomaly": repel}


def anomalyclr_plus(z1: torch.Tensor, z2: torch.Tensor, z_anom: torch.Tensor, *,
                    temperature: float) -> dict[str, torch.Tensor]:
    """AnomalyCLR+: L+_i = (s(z_i, z*_i) - s(z_i, z'_i)) / tau, no negatives (no gather)."""
    with fp32_math(z1.device):
        a1, a2 = unit_fp32(z1), unit_fp32(z2)
        anchors = torch.cat([a1, a2], 0)
        align = -(anchors * torch.cat([a2, a1], 0)).sum(-1).mean() / temperature
        repel = _anomaly_sim(anchors, z_anom).mean() / temperature
        return {"loss": align + repel, "align": align, "anomaly": repel}


def _length(x: torch.Tensor) -> torch.Tensor:
    """|x| over the last axis, in float32 at least (bf16 inputs under autocast)."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.promote_types(x.dtype, torch.float32))


def anomaly_norm_push(reps: tuple[torch.Tensor, ...] | list[torch.Tensor],
                      rep_anom: torch.Tensor) -> torch.Tensor:
    """mean over the physical views v and samples i of softplus(log|r_v,i| - log|r*_i|): small
    when the anomaly view's representation is longer than its jet's physical views'. It trains
    the score DarkCLR reads (|z| of the representation), on which the cosine terms do not act.
    reps: the physical views' representations (B, D) each; rep_anom: the anomaly view's."""
    lengths = _length(torch.stack([*reps, rep_anom]))  # (V + 1, B)
    log_len = torch.log(lengths.clamp_min(torch.finfo(lengths.dtype).tiny))
    return torch.nn.functional.softplus(log_len[:-1] - log_len[-1]).mean()


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *, temperature: float,
           gather: bool = True) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., L_out):
      L_a = -1/|P(a)| sum_{p in P(a)} log( exp(s_ap/tau) / sum_{k != a} exp(s_ak/tau) ),
    P(a) = all other views with the anchor's label; labels < 0 (unknown) match only the other
    view of the same sample (then SupCon = NT-Xent with the positive kept). labels: (B,) int.
    """
    with fp32_math(z1.device):
        logits, self_idx, pos_idx, *_ = _logits(z1, z2, temperature, gather)
        row_lab = labels.to(torch.long)
        col_lab, _ = gather_rows(row_lab, gather=gather, grad=False)
        col_lab, row_lab = torch.cat([col_lab, col_lab], 0), torch.cat([row_lab, row_lab], 0)
        rows = torch.arange(row_lab.shape[0], device=logits.device)
        positive = (row_lab[:, None] == col_lab[None, :]) & (row_lab[:, None] >= 0)
        positive[rows, pos_idx] = True
        positive[rows, self_idx] = False
        log_prob = logits - torch.logsumexp(_mask_cols(logits, self_idx), 1, keepdim=True)
        log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob))
        return (-log_prob.sum(1) / positive.sum(1)).mean()


# ---- the loss modules (LOSSES) ----------------------------------------------------------------

class _Contrastive(Loss):
    published_keep_positive = True  # the denominator of the loss's paper (keep_positive=None)

    def __init__(self, temperature: float = 0.1, keep_positive: bool | None = None,
                 gather: bool = True, norm_penalty: float = 0.0, anomaly_norm: float = 0.0):
        super().__init__()
        if keep_positive is None:
            keep_positive = self.published_keep_positive
        self.temperature, self.keep_positive, self.gather = temperature, keep_positive, gather
        self.norm_penalty, self.anomaly_norm = norm_penalty, anomaly_norm
        if anomaly_norm:
            if not self.needs_anomaly_view:
                raise ValueError(f"loss.anomaly_norm needs a loss with an anomaly view "
                                 f"(anomalyclr, anomalyclr_plus), not {type(self).__name__}")
            self.needs_inputs = True  # the step then passes the representations (reps=)

    def forward(self, z1, z2, z_anom=None, *, labels=None, inputs=None, reps=None
                ) -> dict[str, torch.Tensor]:
        """The family's named terms (:meth:`terms`), plus ``norm_penalty`` x mean |z1| (the first
        view's projection, not normalised; a local mean, which DDP's gradient average makes the
        global one) in "loss" and as the term "norm", and ``anomaly_norm`` x
        :func:`anomaly_norm_push` of the representations ``reps`` (the physical views', then the
        anomaly view's) as the term "anomaly_norm"."""
        out = self.terms(z1, z2, z_anom, labels)
        if self.norm_penalty:
            with fp32_math(z1.device):
                norm = _length(z1).mean()
            out = {**out, "loss": out["loss"] + self.norm_penalty * norm, "norm": norm}
        if self.anomaly_norm:
            if reps is None:
                raise ValueError("loss.anomaly_norm needs the representations (reps=)")
            with fp32_math(z1.device):
                push = anomaly_norm_push(reps[:-1], reps[-1])
            out = {**out, "loss": out["loss"] + self.anomaly_norm * push, "anomaly_norm": push}
        return out

    def terms(self, z1, z2, z_anom, labels) -> dict[str, torch.Tensor]:
        """The loss's named terms without the norm penalty (each family's equation)."""
        raise NotImplementedError

    def _need_anom(self, z_anom):
        if z_anom is None:
            raise ValueError(f"{type(self).__name__} needs the anomaly view (augment.anomaly_view)")
        return z_anom


class NTXentLoss(_Contrastive):
    """forward(z1, z2) -> {"loss"}; by default the SimCLR / public JetCLR denominator that keeps
    the positive."""

    def terms(self, z1, z2, z_anom, labels) -> dict[str, torch.Tensor]:
        return {"loss": nt_xent(z1, z2, temperature=self.temperature,
                                keep_positive=self.keep_positive, gather=self.gather)}

    def collapse_value(self, n_global: int) -> float | None:
        """The loss of a fully collapsed projection (all similarities equal), global batch N;
        None with a norm penalty (the penalised loss has no fixed collapse value)."""
        if self.norm_penalty:
            return None
        return collapse_value(n_global, self.keep_positive)


class AnomalyCLRLoss(_Contrastive):
    """forward(z1, z2, z_anom) -> {"loss", "contrastive", "anomaly"}; by default the published
    (decoupled) denominator without the positive; keep_positive: true adds it."""
    needs_anomaly_view = True
    published_keep_positive = False  # AnomalyCLR (arXiv:2301.04660) eq. 3: positive dropped

    def terms(self, z1, z2, z_anom, labels) -> dict[str, torch.Tensor]:
        return anomalyclr(z1, z2, self._need_anom(z_anom), temperature=self.temperature,
                          keep_positive=self.keep_positive, gather=self.gather)


class AnomalyCLRPlusLoss(_Contrastive):
    """forward(z1, z2, z_anom) -> {"loss", "align", "anomaly"} (no negatives)."""
    needs_anomaly_view = True

    def terms(self, z1, z2, z_anom, labels) -> dict[str, torch.Tensor]:
        return anomalyclr_plus(z1, z2, self._need_anom(z_anom), temperature=self.temperature)


class SupConLoss(_Contrastive):
    """forward(z1, z2, labels=labels) -> {"loss"}."""
    needs_labels = True

    def terms(self, z1, z2, z_anom, labels) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("SupConLoss needs labels (the batch's 'label')")
        return {"loss": supcon(z1, z2, labels, temperature=self.temperature, gather=self.gather)}
