"""When the training loop writes a checkpoint: by steps, by minutes, by epochs, and at the end.

An epoch on a GPU cluster can be a few dozen steps (JetCLR: 100k jets / 2048 per step), so an
epoch is not a natural checkpoint interval: ``checkpoint.every_steps`` and
``checkpoint.every_minutes`` ask for checkpoints inside epochs, ``checkpoint.every_epochs`` at
epoch ends, and the final checkpoint is always written. Every rank must take the same decision
(a checkpoint is a barrier): steps and epochs are the same on every rank, and the minutes are
agreed at logging steps only, through one tiny collective (a rank whose clock says "due" makes
all of them write).
"""

from __future__ import annotations

import time

import torch

from clrdist.distributed import any_rank


class Cadence:
    """``in_epoch(step, log_step)``: a checkpoint now, inside an epoch; ``at_epoch_end(epoch,
    final)``: one at this epoch end; ``saved()``: a checkpoint was written (restarts the clock)."""

    def __init__(self, every_steps: int | None = None, every_minutes: float | None = None,
                 every_epochs: int | None = None, device: torch.device | str = "cpu",
                 clock=time.monotonic):
        self.every_steps, self.every_minutes, self.every_epochs = every_steps, every_minutes, every_epochs
        self.device, self.clock = device, clock
        self.last = clock()

    @classmethod
    def from_config(cls, ckpt, device) -> Cadence:
        return cls(ckpt.every_steps, ckpt.every_minutes, ckpt.every_epochs, device)

    def saved(self) -> None:
        self.last = self.clock()

    def in_epoch(self, step: int, log_step: bool) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        if self.every_minutes and log_step:  # every rank reaches its logging steps together
            return any_rank(self.clock() - self.last >= 60 * self.every_minutes, self.device)
        return False

    def at_epoch_end(self, epoch: int, final: bool) -> bool:
        return final or bool(self.every_epochs and epoch % self.every_epochs == 0)
