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


def global_batch(world: int = WORLD, n_labels: int = 4):
    """3 views of world * B_LOCAL padded jets (pT, eta, phi) float64, masks, labels in
    0..n_labels - 1."""
    g = torch.Generator().manual_seed(123)
    N = world * B_LOCAL
    n = torch.randint(2, P + 1, (3, N), generator=g)
    mask = torch.arange(P)[None, None] < n[..., None]  # (3 views, N, P)
    x = torch.stack([torch.rand(3, N, P, generator=g) + 0.05, torch.randn(3, N, P, generator=g) * 0.3,
                     torch.randn(3, N, P, generator=g) * 0.3], -1).double()
    x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
    return x, mask, torch.randint(0, n_labels, (N,), generator=g)


def _entry(rank, world, port, outdir, fn):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.save(fn(rank), os.path.join(outdir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears its connections down while another still uses them
    finally:
        dist.destroy_process_group()


def on_ranks(fn, world: int = WORLD) -> list[dict]:
    """fn(rank) -> dict of plain values, run on ``world`` gloo processes; one dict per rank."""
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_entry, args=(world, free_port(), d, fn), nprocs=world, join=True)
        return [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]


def ddp_vs_one_process(rank, make_model, step, world: int = WORLD, n_labels: int = 4):
    """The same step once on one process over the whole global batch (no gather) and once under
    DistributedDataParallel over this rank's rows (gather=True).

    ``step(model, module, x, mask, labels, gather) -> (loss, extra)``, ``module`` the bare model.
    Returns ({loss_diff, grad_diff, grad_scale}, extra on one process, extra on this rank).
    """
    x, mask, labels = global_batch(world, n_labels)
    sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    ref = make_model()
    ref_loss, ref_extra = step(ref, ref, x, mask, labels, False)
    ddp = torch.nn.parallel.DistributedDataParallel(make_model())
    loss, extra = step(ddp, ddp.module, x[:, sl], mask[:, sl], labels[sl], True)
    dist.all_reduce(loss)
    diff, scale = grad_diff(ddp.module, ref)
    return ({"loss_diff": abs(loss.item() / world - ref_loss.item()), "grad_diff": diff,
             "grad_scale": scale}, ref_extra, extra)


def grad_diff(ddp_module, ref) -> tuple[float, float]:
    """(max |grad difference|, max |reference grad|) over the parameters of two models."""
    diff = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(ddp_module.parameters(), ref.parameters(), strict=True))
    return diff, max(q.grad.abs().max().item() for q in ref.parameters())
