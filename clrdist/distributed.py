"""The one module that talks to ``torch.distributed``: rank helpers, every collective the
library uses (a differentiable all-gather, gathers without gradient, sums over ranks) and the
one fp32 L2 normaliser the losses and diagnostics share.

Everything has single-process defaults, so library code runs unchanged without a process group.
No collective here reads a value back to the host: they are safe inside a sync-free step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["is_distributed", "get_rank", "get_world_size", "is_rank_zero", "all_gather_with_grad",
           "all_gather_nograd", "gather_rows", "gather_shards", "all_reduce_sum", "all_reduce_min",
           "any_rank", "at_least_float32", "unit_fp32"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


# ---- precision -----------------------------------------------------------------------------

def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 / fp16 from autocast or DeepSpeed), float64 kept."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def unit_fp32(z: torch.Tensor) -> torch.Tensor:
    """Rows L2-normalised in float32 at least: bf16 projections would make exp(s / tau) with
    tau = 0.1 visibly coarse (a bf16 cosine is good to ~4e-3, i.e. 4% in exp(s / tau))."""
    return F.normalize(at_least_float32(z), dim=-1)


# ---- collectives ---------------------------------------------------------------------------

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


def gather_rows(t: torch.Tensor, *, gather: bool = True, grad: bool = True
                ) -> tuple[torch.Tensor, int]:
    """(rows of every rank (world*B, ...), this rank's row offset in them). ``gather=False`` or
    one process: (t, 0). ``grad``: the gather is differentiable (``all_gather_with_grad``)."""
    if not gather or get_world_size() == 1:
        return t, 0
    return (all_gather_with_grad(t) if grad else all_gather_nograd(t)), get_rank() * t.shape[0]


def all_reduce_sum(t: torch.Tensor, *, gather: bool = True) -> torch.Tensor:
    """Sum over ranks, in place (no gradient); identity without a group or with gather=False."""
    if gather and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """Minimum over ranks, in place; identity without a group."""
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on any (a collective: every rank calls it at the
    same point; one read back to the host, for decisions taken at logging steps)."""
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Rows r, r + world, r + 2 world, ... of an n-row array, computed on rank r (``local``),
    back in their original order on every rank: (n, ...). Rows are padded to equal counts for
    the all-gather. One process: ``local`` itself."""
    world = get_world_size()
    if world == 1:
        return local
    per = -(-n // world)
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:local.shape[0]] = local
    parts = all_gather_nograd(padded).view(world, per, *local.shape[1:])
    # row i of the whole came from rank i % world, its row i // world
    return parts.transpose(0, 1).reshape(world * per, *local.shape[1:])[:n]
