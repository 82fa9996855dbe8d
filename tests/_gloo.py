"""Run a function on N real gloo processes and collect what each rank returns."""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# three ranks: W - 1, W / 2 and 1 / W scale errors differ (with two ranks they coincide)
WORLD, B_LOCAL, P = 3, 4, 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch():
    """3 views of WORLD * B_LOCAL padded jets (pT, eta, phi) float64, masks, labels in 0..3."""
    g = torch.Generator().manual_seed(123)
    N = WORLD * B_LOCAL
    n = torch.randint(2, P + 1, (3, N), generator=g)
    mask = torch.arange(P)[None, None] < n[..., None]  # (3 views, N, P)
    x = torch.stack([torch.rand(3, N, P, generator=g) + 0.05, torch.randn(3, N, P, generator=g) * 0.3,
                     torch.randn(3, N, P, generator=g) * 0.3], -1).double()
    x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
    return x, mask, torch.randint(0, 4, (N,), generator=g)


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
        mp.spawn(_entry, args=(free_port(), d, fn), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(WORLD)]


def grad_diff(ddp_module, ref) -> tuple[float, float]:
    """(max |grad difference|, max |reference grad|) over the parameters of two models."""
    diff = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(ddp_module.parameters(), ref.parameters(), strict=True))
    return diff, max(q.grad.abs().max().item() for q in ref.parameters())
