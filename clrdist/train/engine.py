"""Distributed engines: the one thing the training loop steps through.

The loop calls ``engine.model(x, mask)`` and ``engine.step(loss)``; whether that is PyTorch DDP
(through Ray Train's ``prepare_model``) or DeepSpeed (``deepspeed.initialize``, ZeRO 1/2) is
decided here, from ``scaling.engine``. Both use the torch process group Ray Train set up (gloo
on CPU, NCCL on GPU).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from clrdist.config import RunConfig
from clrdist.distributed import all_reduce_min
from clrdist.errors import ClrdistError
from clrdist.precision import resolve


def lr_lambda(cfg: RunConfig, total_steps: int):
    """Linear warm-up to the base rate, then cosine decay to 10% of it over ``total_steps``."""
    warm = cfg.optim.warmup_steps

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def sync_batchnorm(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """BatchNorm statistics over the global batch, as the single-process loss sees them, on
    several GPUs (SyncBatchNorm needs CUDA; on CPU each rank normalises its own rows)."""
    if cfg.scaling.use_gpu and cfg.scaling.num_workers > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def adamw(params, cfg: RunConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW; ``fused`` (None: on CUDA) uses torch's fused kernel: one kernel per step, and its
    step counters stay on the device (the for-each form keeps them on the host and reads them
    there, which is free on a CPU but is what a sync-free CPU test must not see)."""
    params = list(params)
    devices = {p.device.type for p in params}
    if fused is None:
        fused = devices == {"cuda"}
    fused = fused and bool(params) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                             fused=fused or None)


class Engine:
    """Model + optimiser + scheduler behind one ``step``; ``module`` is the unwrapped model."""

    model: nn.Module
    module: nn.Module

    def step(self, loss: torch.Tensor) -> dict[str, float | torch.Tensor]:
        """Backward, clipping, optimiser and scheduler step. Returns {"lr": float} and, with
        clipping, {"grad_norm": 0-d tensor} left on the device (read it at logging steps only)."""
        raise NotImplementedError

    def train(self) -> None:
        self.model.train()

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def rank_state(self) -> dict[str, Any] | None:
        """What this rank alone holds (a partitioned optimiser's shard), or None."""
        return None

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`rank_state` returned, after :meth:`load_state_dict`."""


class LocalEngine(Engine):
    """One process, no wrapper: the model on ``device`` with AdamW, the schedule and clipping.
    The DDP engine is this with the model wrapped by Ray Train; benchmarks and the device check
    step this one (no Ray)."""

    def __init__(self, model: nn.Module, cfg: RunConfig, total_steps: int,
                 device: str | torch.device = "cpu", *, fused: bool | None = None):
        self.model = self._wrap(model, cfg, device)
        self.module = getattr(self.model, "module", self.model)
        self.optimizer = adamw(self.module.parameters(), cfg, fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, total_steps))
        self.grad_clip = cfg.optim.grad_clip

    def _wrap(self, model: nn.Module, cfg: RunConfig, device) -> nn.Module:
        return model.to(device)

    def step(self, loss: torch.Tensor) -> dict[str, float | torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        out: dict[str, float | torch.Tensor] = {"lr": self.scheduler.get_last_lr()[0]}
        if self.grad_clip:  # the norm stays on the device: no host sync per step
            out["grad_norm"] = nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class DDPEngine(LocalEngine):
    """PyTorch DDP through Ray Train's ``prepare_model`` (plain model when world size is 1)."""

    def _wrap(self, model: nn.Module, cfg: RunConfig, device) -> nn.Module:
        # lazy: Ray (~1.5 s; absent on the GPU check's machine) only for the DDP engine
        from ray.train.torch import prepare_model

        return prepare_model(sync_batchnorm(model, cfg))  # DDP when world_size > 1, moved to the worker's device


def deepspeed_bf16(cfg: RunConfig) -> bool:
    """DeepSpeed's bf16 mode for this run: the precision policy resolves to bf16 on the run's
    device (``cuda`` with ``scaling.use_gpu``, else ``cpu``)."""
    return resolve(cfg.scaling.precision, "cuda" if cfg.scaling.use_gpu else "cpu").name == "bf16"


class DeepSpeedEngine(Engine):
    def __init__(self, model: nn.Module, cfg: RunConfig, total_steps: int):
        if not cfg.scaling.use_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # lazy: deepspeed is optional (the deepspeed extra)
        import deepspeed

        ds_config = {
            "train_micro_batch_size_per_gpu": cfg.data.batch_size,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": cfg.scaling.zero_stage},
            # bf16 weights (DeepSpeed's bf16 mode; fp32 master weights in the optimiser) wherever
            # the precision policy picks bf16 on this run's device: on GPUs, and on CPUs with
            # precision bf16 (or auto with native bf16), where the tests run it
            "bf16": {"enabled": deepspeed_bf16(cfg)},
            "steps_per_print": 10**9,  # we log through MLflow, not stdout
        }
        if cfg.optim.grad_clip:
            ds_config["gradient_clipping"] = cfg.optim.grad_clip
        model = sync_batchnorm(model, cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr,
                                      weight_decay=cfg.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
        # Ray Train has already initialised torch.distributed; DeepSpeed reuses that group.
        deepspeed.init_distributed(dist_backend="nccl" if cfg.scaling.use_gpu else "gloo")
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.module = self.model.module

    def step(self, loss: torch.Tensor) -> dict[str, float]:
        self.model.backward(loss)
        lr = self.scheduler.get_last_lr()[0]
        self.model.step()  # optimiser + scheduler step, gradients zeroed
        return {"lr": lr}

    def state_dict(self) -> dict[str, Any]:
        # With ZeRO 1/2 the optimiser state is partitioned over ranks: rank 0's state dict holds
        # the full model and scheduler, the optimiser only when it is not partitioned; each
        # rank's shard is its rank_state.
        state = {"model": self.module.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.model.zero_optimization_stage() == 0:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    def rank_state(self) -> dict[str, Any] | None:
        """ZeRO 1/2: this rank's optimiser shard (AdamW's moments of its partition and its fp32
        master weights), plain tensors only so that it loads with ``weights_only=True``."""
        if self.model.zero_optimization_stage() == 0:
            return None
        # lazy: deepspeed is optional (the deepspeed extra)
        from deepspeed.checkpoint.constants import (
            BASE_OPTIMIZER_STATE,
            SINGLE_PARTITION_OF_FP32_GROUPS,
        )

        sd = self.optimizer.state_dict()
        return {"world_size": self.model.dp_world_size, "optimizer": sd[BASE_OPTIMIZER_STATE],
                "fp32_partitions": sd[SINGLE_PARTITION_OF_FP32_GROUPS]}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Put a saved shard into this rank's ZeRO optimiser (the same number of ranks only: a
        shard covers 1 / world of the parameters)."""
        if self.model.zero_optimization_stage() == 0:
            return
        # lazy: deepspeed is optional (the deepspeed extra)
        from deepspeed.checkpoint.constants import (
            BASE_OPTIMIZER_STATE,
            SINGLE_PARTITION_OF_FP32_GROUPS,
        )

        world = self.model.dp_world_size
        if state["world_size"] != world:
            raise CheckpointMismatch(f"the checkpoint's optimiser is partitioned over "
                                     f"{state['world_size']} ranks, this run has {world}")
        # the engine's own state dict supplies DeepSpeed's bookkeeping (version, paddings, loss
        # scaler); the saved shard replaces the optimiser state and fp32 weights
        sd = self.optimizer.state_dict()
        sd[BASE_OPTIMIZER_STATE] = state["optimizer"]
        sd[SINGLE_PARTITION_OF_FP32_GROUPS] = state["fp32_partitions"]
        self.optimizer.load_state_dict([sd] * world, load_optimizer_states=True,
                                       load_from_fp32_weights=True)


ENGINES = {"ddp": DDPEngine, "deepspeed": DeepSpeedEngine}


class CheckpointMismatch(ClrdistError):
    """A checkpoint that cannot resume this run as configured."""


class NonFiniteLoss(ClrdistError):
    """The loss became NaN or infinite: training stops; no checkpoint is written after it."""


_NONE = 2**62  # "no non-finite step yet" in the rank-wide minimum


class LossGuard:
    """The first step whose loss was not finite, kept on the device (no host sync per step).

    ``check`` (every rank, at the same steps: log points and before every checkpoint) takes the
    minimum over ranks and raises :class:`NonFiniteLoss` naming that step, so every rank stops
    together and the last checkpoint written is one from before the loss went non-finite.
    """

    def __init__(self, device: torch.device):
        self.first = torch.full((), _NONE, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first = torch.where(bad, torch.clamp(self.first, max=step), self.first)

    def check(self) -> None:
        step = int(all_reduce_min(self.first.clone()))  # the logging step's one read
        if step != _NONE:
            raise NonFiniteLoss(
                f"non-finite loss at step {step}: training stopped there and its last checkpoint "
                "is from before it; check the training store (clrdist data info --verify) or "
                "lower optim.lr / set optim.grad_clip")


def build_engine(model: nn.Module, cfg: RunConfig, total_steps: int) -> Engine:
    return ENGINES[cfg.scaling.engine](model, cfg, total_steps)
