"""DINO: self-distillation with no labels (Caron et al., arXiv:2104.14294), for jets and events.

The student is the trained model g_s; the teacher g_t has the same architecture and follows the
student's parameters as an exponential moving average after every optimiser step
(``after_step``), with DINO's cosine momentum schedule over the run's K steps:

    theta_t <- m_k theta_t + (1 - m_k) theta_s,   m_k = m_K - (m_K - m_0) (cos(pi k / K) + 1) / 2

(m_0 = ``teacher_momentum``, m_K = ``teacher_momentum_end``: 1 in DINO, made for hundreds of
epochs; a short run may end below 1 so that the teacher keeps following its student)

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
import torch.nn.functional as F
from torch import nn

from clrdist.distributed import all_reduce_sum, at_least_float32, get_world_size
from clrdist.losses.base import Loss, fp32_math

__all__ = ["dino_cross_entropy", "global_mean", "teacher_momentum", "DINOLoss"]


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
    s = all_reduce_sum(at_least_float32(t).sum(0), gather=gather)
    return s / (t.shape[0] * (get_world_size() if gather else 1))


def teacher_momentum(step: int, total_steps: int, base: float, end: float = 1.0) -> float:
    """DINO's cosine schedule from ``base`` at step 0 to ``end`` (DINO: 1) at ``total_steps``."""
    phase = (math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)) + 1) / 2
    return end - (end - base) * phase


class DINOLoss(Loss):
    """forward(*views (B, K) each, inputs=(x, mask)) -> {"loss", "teacher_entropy"}.

    ``attach(student, total_steps)`` once before training (builds the teacher as a copy of the
    student); ``after_step(student)`` after every optimiser step (the EMA); ``eval_model``: the
    teacher. State: the teacher, the centre and the step count (all in ``state_dict``, saved in
    checkpoints)."""

    needs_inputs = True  # the loop passes inputs=(x, mask) of every view: the teacher's input
    multi_view = True  # accepts augment.local_views (student-only views)
    n_global = 2

    def __init__(self, temperature: float = 0.1, teacher_temperature: float = 0.04,
                 centre_momentum: float = 0.9, teacher_momentum: float = 0.996,
                 teacher_momentum_end: float = 1.0, gather: bool = True):
        super().__init__()
        self.temperature, self.teacher_temperature = temperature, teacher_temperature
        self.centre_momentum, self.gather = centre_momentum, gather
        self.base_momentum, self.end_momentum = teacher_momentum, teacher_momentum_end
        self.teacher: nn.Module | None = None
        self.total_steps = 1
        self.register_buffer("centre", torch.zeros(0))
        self.count_steps()

    def attach(self, model: nn.Module, total_steps: int) -> None:
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.total_steps = total_steps
        super().attach(model, total_steps)

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model if self.teacher is None else self.teacher

    def train(self, mode: bool = True) -> DINOLoss:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never trains (no dropout, frozen statistics)
        return self

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
        with fp32_math(t.device):
            t = at_least_float32(t)
            if self.centre.numel() == 0:  # the number of prototypes, from the first batch
                self.centre = torch.zeros(t.shape[1], dtype=t.dtype, device=t.device)
            loss = dino_cross_entropy(list(views), list(t.chunk(self.n_global)), self.centre,
                                      student_temperature=self.temperature,
                                      teacher_temperature=self.teacher_temperature)
            with torch.no_grad():
                p = F.softmax((t - self.centre) / self.teacher_temperature, -1)
                entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
                self.centre.mul_(self.centre_momentum).add_(
                    global_mean(t, self.gather), alpha=1 - self.centre_momentum)
        return {"loss": loss, "teacher_entropy": entropy}

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """EMA of the student's parameters into the teacher (one fused update over all tensors,
        the momentum from the Python step count: nothing is read back from the device);
        buffers (BatchNorm statistics) copied."""
        m = teacher_momentum(self.step_count, self.total_steps, self.base_momentum,
                             self.end_momentum)
        teacher = list(self.teacher.parameters())
        student = [ps if ps.dtype == pt.dtype else ps.to(pt.dtype)  # (under no_grad: no detach)
                   for pt, ps in zip(teacher, model.parameters(), strict=True)]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1 - m)
        t_buf, s_buf = list(self.teacher.buffers()), list(model.buffers())
        if t_buf:
            torch._foreach_copy_(t_buf, s_buf)
        self.tick()
