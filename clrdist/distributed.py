"""The one module that talks to ``torch.distributed``: rank helpers and a differentiable gather.

Everything has single-process defaults, so library code runs unchanged without a process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_world_size", "is_rank_zero", "all_gather_with_grad",
           "all_gather_nograd"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


class _AllGather(torch.autograd.Function):
    """forward: (B, ...) -> (world*B, ...), rank r's rows at [r*B, (r+1)*B).

    backward: every rank's loss depends on every rank's rows, so the gradient of this rank's
    slice is the SUM over ranks of d(loss_rank')/d(slice) -- an all-reduce(sum) of the incoming
    gradient, then this rank's slice. With each rank's loss averaged over its local rows and DDP
    averaging parameter gradients over ranks, the parameter gradient equals that of the
    single-process loss on the concatenated global batch (tests/test_distributed_grad.py).
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.batch = dist.get_rank(), t.shape[0]
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """t: (B, D) on every rank (same B everywhere) -> (world*B, D); identity without a group."""
    if get_world_size() == 1:
        return t
    return _AllGather.apply(t)


def all_gather_nograd(t: torch.Tensor) -> torch.Tensor:
    """Gather without gradient (labels, indices): (B, ...) -> (world*B, ...)."""
    if get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, 0)
