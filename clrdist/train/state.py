"""What a training worker resumes from and checkpoints: :class:`TrainState`.

The engine (model, optimiser, scheduler), the loss (a stateful loss's state: DINO's teacher and
centre), this rank's data stream behind its device prefetcher, and the position: step, epoch and
whether the last checkpoint was written inside an epoch. ``restore`` reads the checkpoint Ray
Train hands a restarted worker; ``report`` is every rank's ``ray.train.report`` (a barrier), with
this rank's part of a checkpoint when one is due (clrdist/train/checkpoint.py holds the layout).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import ray.train

from clrdist.config import RunConfig
from clrdist.data.prefetch import DevicePrefetcher
from clrdist.data.stream import ShardedStream
from clrdist.train import checkpoint
from clrdist.train.cadence import Cadence
from clrdist.train.engine import LossGuard


@dataclass
class TrainState:
    engine: Any
    loss_fn: Any
    stream: ShardedStream
    prefetcher: DevicePrefetcher
    cfg: RunConfig
    rank: int
    guard: LossGuard  # the first non-finite loss: no checkpoint after it
    cadence: Cadence | None = None  # built once the state is restored (its clock starts then)
    step: int = 0
    epoch: int = 0
    mid_epoch: bool = False

    def restore(self, ckpt) -> bool:
        """Load a Ray Train checkpoint (None: nothing to load, False): the engine's state, the
        loss's state, this rank's ZeRO optimiser shard, the step and epoch, and for a checkpoint
        written inside an epoch this rank's stream position."""
        if ckpt is None:
            return False
        with ckpt.as_directory() as d:
            state, meta = checkpoint.load(d)
            self.engine.load_state_dict(state)
            if "loss" in state:  # a stateful loss's state (DINO: teacher, centre)
                self.loss_fn.load_state_dict(state["loss"])
            if (own := checkpoint.load_rank_state(d, self.rank)) is not None:
                self.engine.load_rank_state(own)  # ZeRO 1/2: this rank's optimiser shard
            self.step, self.epoch = meta["step"], meta["epoch"]
            self.mid_epoch = meta.get("mid_epoch", False)
            if self.mid_epoch and (s := checkpoint.load_stream_state(d, self.rank)) is not None:
                self.stream.load_state_dict(s)
        return True

    def report(self, metrics: dict[str, float], *, mid: bool, save: bool = True) -> None:
        """Every rank reports (it is a barrier); with ``save`` each writes its stream position
        and ZeRO shard, rank 0 the model (:meth:`save`)."""
        self.guard.check()  # never a checkpoint after a non-finite loss
        if not save:
            ray.train.report(metrics)  # metrics only (Ray Tune's schedulers read them)
            return
        self.save(metrics, mid=mid)

    def save(self, metrics: dict[str, float], *, mid: bool) -> None:
        """This rank's part of a checkpoint, reported to Ray Train with ``metrics``."""
        self.cadence.saved()
        master = self.rank == 0
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(tmp, state=checkpoint.training_state(self.engine, self.loss_fn) if master else None,
                            step=self.step, epoch=self.epoch, cfg=self.cfg, rank=self.rank,
                            stream_state=self.prefetcher.stream_state(), mid_epoch=mid,
                            rank_state=self.engine.rank_state())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
