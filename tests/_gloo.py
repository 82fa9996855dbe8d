"""Run a function on N real gloo processes and collect what each rank returns."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed_grad import WORLD, _free_port


def _entry(rank, port, outdir, fn):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        torch.save(fn(rank), os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def on_ranks(fn) -> list[dict]:
    """fn(rank) -> dict of plain values, run on WORLD gloo processes; one dict per rank."""
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_entry, args=(_free_port(), d, fn), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(WORLD)]


def grad_diff(ddp_module, ref) -> tuple[float, float]:
    """(max |grad difference|, max |reference grad|) over the parameters of two models."""
    diff = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(ddp_module.parameters(), ref.parameters(), strict=True))
    return diff, max(q.grad.abs().max().item() for q in ref.parameters())
