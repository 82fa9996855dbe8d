"""DINO: self-distillation with no labels (Caron et al., arXiv:2104.14294), for jets and events.

The student is the trained model g_s; the teacher g_t has the same architecture and follows the
student's parameters as an exponential moving average after every optimiser step
(``after_step``), with DINO's cosine momentum schedule over the run's K steps:

    theta_t <- m_k theta_t + (1 - m_k) theta_s,   m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2

The teacher sees the global views only (``augment.views``, 2); the student sees them and the
local views (``augment.local_views``: stronger masking, object or constituent dropping). With
g(x) the head outputs (cosines with the prototypes, ``model.head: dino``),

    P_t(x) = softmax((g_t(x) - c) / tau_t)   (centring, then sharpening: tau_t < tau_s)
    P_s(x) = softmax(g_s(x) / tau_s)
    L = 1/n_pairs sum_{a in global} sum_{v != a} mean_batch H(P_t(x_a), P_s(x_v)),
        H(p, q) = -sum_k p_k log q_k

and after every forward the centre c <- lambda c + (1 - lambda) mean(g_t) with the mean over the
teacher outputs of the GLOBAL batch (both global views of every rank: an all-reduce). Each rank's
loss is the mean over its local rows; DDP averages the gradients, which gives the global mean.
Evaluation uses the teacher (``clrdist.train.checkpoint.load_model``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clrdist.distributed import get_world_size

__all__ = ["dino_cross_entropy", "global_mean", "teacher_momentum", "at_least_float32", "DINOLoss"]


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 autocast outputs), float64 kept."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def dino_cross_entropy(student: list[torch.Tensor], teacher: list[torch.Tensor],
                       centre: torch.Tensor, *, student_temperature: float,
                       teacher_temperature: float) -> torch.Tensor:
    """student: V tensors (B, K) (global views first), teacher: G tensors (B, K) of the global
    views, centre (K,) -> mean over the G (V - 1) pairs (a, v != a) of the batch-mean H(P_t, P_s)."""
    t = [F.softmax((at_least_float32(ti) - centre) / teacher_temperature, -1).detach() for ti in teacher]
    logq = [F.log_softmax(at_least_float32(si) / student_temperature, -1) for si in student]
    total, n = 0.0, 0
    for a, pa in enumerate(t):
        for v, lq in enumerate(logq):
            if v == a:
                continue
            total = total + (-(pa * lq).sum(-1)).mean()
            n += 1
    return total / n


@torch.no_grad()
def global_mean(t: torch.Tensor, gather: bool = True) -> torch.Tensor:
    """Mean over the rows of every rank: t (n, K) with n equal on every rank -> (K,)."""
    s = at_least_float32(t).sum(0)
    n = torch.tensor(float(t.shape[0]), dtype=s.dtype, device=t.device)
    if gather and get_world_size() > 1:
        dist.all_reduce(s)
        dist.all_reduce(n)
    return s / n


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """DINO's cosine schedule from ``base`` at step 0 to 1 at ``total_steps``."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)) + 1) / 2


class DINOLoss(nn.Module):
    """forward(*views (B, K) each, inputs=(x, mask)) -> {"loss", "teacher_entropy"}.

    ``attach(student, total_steps)`` once before training (builds the teacher as a copy of the
    student); ``after_step(student)`` after every optimiser step (the EMA). State: the teacher,
    the centre and the step count (all in ``state_dict``, saved in checkpoints)."""

    needs_labels = False
    needs_anomaly_view = False
    needs_inputs = True  # the loop passes inputs=(x, mask) of every view: the teacher's input
    multi_view = True  # accepts augment.local_views (student-only views)
    n_global = 2

    def __init__(self, temperature: float = 0.1, teacher_temperature: float = 0.04,
                 centre_momentum: float = 0.9, teacher_momentum: float = 0.996,
                 gather: bool = True):
        super().__init__()
        self.temperature, self.teacher_temperature = temperature, teacher_temperature
        self.centre_momentum, self.base_momentum, self.gather = (centre_momentum,
                                                                 teacher_momentum, gather)
        self.teacher: nn.Module | None = None
        self.total_steps = 1
        self.register_buffer("centre", torch.zeros(0))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg) -> DINOLoss:
        return cls(temperature=cfg.temperature, teacher_temperature=cfg.teacher_temperature,
                   centre_momentum=cfg.centre_momentum, teacher_momentum=cfg.teacher_momentum,
                   gather=cfg.gather)

    def attach(self, student: nn.Module, total_steps: int) -> None:
        self.teacher = copy.deepcopy(student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.total_steps = total_steps
        self.to(next(student.parameters()).device)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        self.centre = torch.zeros_like(state["centre"], device=self.centre.device)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def forward(self, *views: torch.Tensor, labels=None, inputs=None, reps=None
                ) -> dict[str, torch.Tensor]:
        if self.teacher is None or inputs is None:
            raise ValueError("DINOLoss needs attach(student) before training and inputs=(x, mask)")
        x, mask = inputs
        B = views[0].shape[0]
        with torch.no_grad():
            _, t = self.teacher(x[:self.n_global * B], mask[:self.n_global * B])
            t = at_least_float32(t)
        if self.centre.numel() == 0:
            self.centre = torch.zeros(t.shape[1], dtype=t.dtype, device=t.device)
        loss = dino_cross_entropy(list(views), list(t.chunk(self.n_global)), self.centre,
                                  student_temperature=self.temperature,
                                  teacher_temperature=self.teacher_temperature)
        with torch.no_grad():
            p = F.softmax((t - self.centre) / self.teacher_temperature, -1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            self.centre.mul_(self.centre_momentum).add_(
                (1 - self.centre_momentum) * global_mean(t, self.gather))
        return {"loss": loss, "teacher_entropy": entropy}

    @torch.no_grad()
    def after_step(self, student: nn.Module) -> None:
        """EMA of the student's parameters into the teacher; buffers (BatchNorm statistics)
        copied."""
        m = teacher_momentum(int(self.step), self.total_steps, self.base_momentum)
        for pt, ps in zip(self.teacher.parameters(), student.parameters(), strict=True):
            pt.mul_(m).add_(ps.detach().to(pt.dtype), alpha=1 - m)
        for bt, bs in zip(self.teacher.buffers(), student.buffers(), strict=True):
            bt.copy_(bs)
        self.step += 1
