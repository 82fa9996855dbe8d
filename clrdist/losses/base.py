"""The one protocol every loss follows, so that the training step never probes a loss.

A loss is an ``nn.Module`` (its state lives in registered buffers and submodules: it moves with
``.to()`` and is saved by ``state_dict``) with:

- ``forward(*views, labels=None, inputs=None, reps=None) -> dict`` of named scalar terms, always
  with ``"loss"`` (the one that is back-propagated). ``views``: the projections (B, D) of each
  view, in the order of ``augment.views``, then ``augment.local_views``, then the anomaly view;
- declared needs: ``needs_labels`` (the batch's labels as ``labels=``), ``needs_inputs`` (the
  model inputs ``inputs=(x, mask)`` of every view and the representations ``reps=``),
  ``needs_anomaly_view``, ``multi_view`` (takes student-only local views), ``min_output_dim``;
- ``attach(model, total_steps)`` once before training (moves the loss's state to the model's
  device), ``after_step(model)`` after every optimiser step (no-op unless the loss keeps a
  second network, as DINO's teacher);
- ``eval_model(model)``: the network evaluation uses (DINO: the teacher, else ``model``);
- ``collapse_value(n_global)``: the loss of a collapsed representation for a global batch of
  n_global samples, or None when unknown.

Precision: the similarity logits and the loss are computed in float32 even under bf16 autocast
(``fp32_math``: rows normalised in fp32 by ``clrdist.distributed.unit_fp32``, autocast off).
No loss reads a value back to the host or makes a tensor on the CPU inside ``forward``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["Loss", "fp32_math", "device_generator"]


def fp32_math(device: torch.device):
    """Autocast off on ``device`` (inputs then stay in the dtype they have: cast them to fp32).
    The meta device (device-cleanliness tests) has no autocast: a null context there."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def device_generator(device: torch.device, seed: int) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed`` (draws identical on every rank of the same
    device type, made where they are used: no host -> device copy); None on the meta device."""
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(seed)


class Loss(nn.Module):
    """Base class of every loss: the no-op protocol (see the module docstring)."""

    needs_labels: bool = False
    needs_inputs: bool = False
    needs_anomaly_view: bool = False
    multi_view: bool = False
    min_output_dim: int = 1
    step_count: int | None = None  # optimiser steps seen, for losses that count_steps()

    def attach(self, model: nn.Module, total_steps: int) -> None:
        """Called once before the first step with the (unwrapped) trained model, on its device:
        the loss's state (buffers, submodules) moves there."""
        param = next(model.parameters(), None)
        if param is not None:
            self.to(param.device)

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step."""

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The network evaluation uses: the trained ``model`` unless the loss keeps another."""
        return model

    def collapse_value(self, n_global: int) -> float | None:
        """The loss of a collapsed representation at global batch ``n_global``; None: unknown."""
        return None

    def forward(self, *views: torch.Tensor, labels: torch.Tensor | None = None,
                inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
                reps: tuple[torch.Tensor, ...] | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- the step count of a stateful loss (DINO's schedule, ORCA's draws) ---------------------

    def count_steps(self) -> None:
        """Keep the optimiser-step count twice: ``step_count``, a Python int the loss computes
        with (reading a device tensor every step would wait for the device), and the buffer
        ``step`` that checkpoints carry (incremented on the device, read back only when a state
        is loaded)."""
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.step_count = 0

    def tick(self) -> None:
        self.step_count += 1
        self.step.add_(1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.step_count is not None and prefix + "step" in state_dict:
            self.step_count = int(state_dict[prefix + "step"])  # once, at resume
