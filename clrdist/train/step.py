"""One training step: views -> forward -> loss -> backward -> clipping -> optimiser -> NaN guard.

The Ray loop (``clrdist.train.loop``), ``bench/train_step.py`` and ``bench.gpu_check`` all call
:func:`train_step`, so a benchmark measures exactly what training runs. This module imports no
Ray (tests check it): a device check runs it with :class:`clrdist.train.engine.LocalEngine`.

GPU-shaped (STYLE.md, 13): with ``sync_free`` (default: on every device but the CPU) the views
work on fixed slots, the encoder does not trim padding per batch, the gradient norm and the NaN
guard stay on the device, and the step performs no operation whose output shape depends on the
data and no device -> host read (``tests/test_step.py`` counts them with
:func:`clrdist.syncs.count_syncs`). On the CPU the default keeps the host-side shortcuts
(trimming to the longest jet, the fused augmentation kernel), which are faster there.

Precision (:mod:`clrdist.precision`): the encoder's forward under the policy's autocast, the
loss always in float32 on float32 projections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clrdist.config import RunConfig
from clrdist.models.transformer import TransformerEncoder
from clrdist.physics.augment import View
from clrdist.precision import Precision, fp32_region
from clrdist.train.engine import Engine, LossGuard
from clrdist.train.inputs import view_inputs

__all__ = ["StepOutput", "set_sync_free", "prepare_model", "compute_loss",
           "train_step", "default_sync_free", "seed_step"]


def augment_seed(seed: int, rank: int, step: int) -> int:
    """Augmentation randomness is a pure function of (seed, rank, step): exact on resume."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def seed_step(gen: torch.Generator, seed: int, rank: int, step: int) -> None:
    """Every random number of one step from (seed, rank, step): the views' ``gen``, and torch's
    global generators, which dropout (and any loss drawing without a generator) uses. A resumed
    run then draws what the uninterrupted one drew, and no checkpoint needs to carry an RNG
    state. ``torch.manual_seed`` sets the CUDA generators' seed and offset on the host: no sync."""
    s = augment_seed(seed, rank, step)
    gen.manual_seed(s)
    torch.manual_seed((s ^ 0x5EED_D50F) % (2**63 - 1))


def default_sync_free(device: str | torch.device) -> bool:
    """Sync-free (fixed-shape) step on every device but the CPU."""
    return torch.device(device).type != "cpu"


def set_sync_free(model: nn.Module, sync_free: bool) -> nn.Module:
    """Sync-free: the transformer encoders of ``model`` keep every slot (no per-batch trim of the
    padding, which reads the multiplicities on the host); else they trim on the CPU only."""
    for m in model.modules():
        if isinstance(m, TransformerEncoder):
            m.trim = False if sync_free else None
    return model


def prepare_model(model: nn.Module, *, sync_free: bool, compile: bool = False) -> nn.Module:
    """The model as the step runs it: :func:`set_sync_free`, and with ``compile`` (``model.
    compile``) the encoder's forward compiled in place by ``torch.compile`` (parameter names and
    checkpoints unchanged)."""
    set_sync_free(model, sync_free)
    if compile:
        model.encoder.compile(dynamic=False if sync_free else None)
    return model


def compute_loss(loss_fn: nn.Module, z: torch.Tensor, rep: torch.Tensor, n_views: int, *,
                 labels: torch.Tensor | None, inputs: tuple[torch.Tensor, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """The one place the loss is called: float32 projections, autocast off (the similarity
    logits at tau = 0.1 need float32). z, rep: (V B, .) the head and encoder outputs of all
    views stacked; returns the loss's named terms ({"loss": scalar, ...})."""
    with fp32_region(z.device.type):
        zs = z.float().chunk(n_views)
        needs_inputs = loss_fn.needs_inputs  # DINO, ORCA (clrdist.losses.base)
        return loss_fn(*zs, labels=labels, inputs=inputs if needs_inputs else None,
                       reps=rep.chunk(n_views) if needs_inputs else None)


@dataclass
class StepOutput:
    """What a step leaves on the device: the loss terms, the engine's info ({"lr": float,
    "grad_norm": tensor}), the representations and projections (for diagnostics at logging
    steps), and the number of jets in the batch."""

    terms: dict[str, torch.Tensor]
    info: dict[str, Any]
    rep: torch.Tensor
    z: torch.Tensor
    jets: int

    def metrics(self) -> dict[str, float]:
        """Host floats of the terms and the info: one read, at logging steps only."""
        vals = {f"train_{k}": v.detach() for k, v in self.terms.items()}
        vals.update({k: v.detach() if isinstance(v, torch.Tensor) else v
                     for k, v in self.info.items()})
        tensors = {k: v for k, v in vals.items() if isinstance(v, torch.Tensor)}
        if tensors:  # one stacked copy to the host instead of one read per value
            host = torch.stack([t.float().reshape(()) for t in tensors.values()]).cpu().tolist()
            vals.update(zip(tensors, host, strict=True))
        return {k: float(v) for k, v in vals.items()}


def train_step(engine: Engine, loss_fn: nn.Module, views: Sequence[View],
               batch: dict[str, Any], generator: torch.Generator, cfg: RunConfig,
               precision: Precision, *, step: int, guard: LossGuard | None = None,
               device: str | torch.device | None = None) -> StepOutput:
    """One optimiser step on ``batch`` ({"particles": (B, P, F), "mask": (B, P), "label": (B,)},
    tensors already on the device, or numpy arrays on the CPU). ``generator`` draws the views'
    randomness (seed it per step for exact resumes); ``step`` is the step number after this one
    (what ``guard`` records when the loss is not finite)."""
    device = torch.device(device) if device is not None else batch["mask"].device

    # -- views: every view of the same jets, stacked along the batch axis --------------------
    x, mask = view_inputs(batch["particles"], batch["mask"], cfg, views, generator, device=device)

    # -- encode (under the precision policy's autocast) and loss (float32) -------------------
    with precision.forward_context():
        rep, z = engine.model(x, mask)
    labels = torch.as_tensor(batch["label"], device=device) if loss_fn.needs_labels else None
    terms = compute_loss(loss_fn, z, rep, len(views), labels=labels, inputs=(x, mask))

    # -- backward, clipping, optimiser, schedule; then the teacher of DINO-like losses -------
    info = engine.step(terms["loss"])
    loss_fn.after_step(engine.module)  # DINO: teacher <- EMA of the student

    # -- NaN guard: the first non-finite step, kept on the device ----------------------------
    if guard is not None:
        guard.update(terms["loss"], step)
    return StepOutput(terms, info, rep, z, len(batch["mask"]))
