"""N real gloo processes (N = 2 and 3) vs one process on the concatenated global batch.

Each rank computes its loss for its LOCAL rows against all-gathered columns, backpropagates
through DistributedDataParallel (which averages gradients over ranks); every parameter gradient
must equal the single-process gradient on the global batch, for every loss, for the transformer
and for the dense encoder with its normalisation layers (LayerNorm, the default: BatchNorm
statistics cannot be synchronised under gloo, see clrdist/models/dense.py). Three ranks make
W - 1, W / 2 and 1 / W scale errors visible (with two they coincide).
"""

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clrdist.config import LossConfig, ModelConfig
from clrdist.distributed import all_gather_with_grad, get_rank, get_world_size, is_rank_zero
from clrdist.losses import LOSSES, build_loss
from clrdist.models import build_model

B_LOCAL, P = 4, 10
MODELS = {
    "transformer": ModelConfig(model_dim=16, ff_dim=32, heads=2, layers=2, head_dims=[16],
                               output_dim=8, dropout=0.0, log_pt_bias=True),
    # the dense encoder's default norm, LayerNorm, in every hidden layer (flattened P x 3 input)
    "dense": ModelConfig(encoder="dense", frame="event", dense_input_dim=3 * P,
                         dense_dims=[16, 12, 8], head_dims=[16], output_dim=8),
}
CASES = [("transformer", "nt_xent", True), ("transformer", "nt_xent", False),
         ("transformer", "anomalyclr", False), ("transformer", "anomalyclr", True),
         ("transformer", "anomalyclr_plus", True), ("transformer", "supcon", True),
         ("dense", "nt_xent", True), ("dense", "anomalyclr", False)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(world):
    g = torch.Generator().manual_seed(123)
    N = world * B_LOCAL
    n = torch.randint(2, P + 1, (3, N), generator=g)
    mask = torch.arange(P)[None, None] < n[..., None]  # (3 views, N, P)
    x = torch.stack([torch.rand(3, N, P, generator=g) + 0.05, torch.randn(3, N, P, generator=g) * 0.3,
                     torch.randn(3, N, P, generator=g) * 0.3], -1).double()
    x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
    labels = torch.randint(0, 3, (N,), generator=g)
    return x, mask, labels


def _model(name):
    torch.manual_seed(0)
    return build_model(MODELS[name]).double()


def _step(model, loss_fn, x, mask, labels):
    """One forward over the three views stacked (one DDP forward), the loss, backward."""
    V, B = x.shape[0], x.shape[1]
    _, z = model(x.flatten(0, 1), mask.flatten(0, 1))
    z1, z2, za = z.view(V, B, -1).unbind(0)
    out = loss_fn(z1, z2, z_anom=za, labels=labels)
    out["loss"].backward()
    return out["loss"].detach()


def _worker(rank, world, port, outdir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        assert get_rank() == rank and get_world_size() == world and is_rank_zero() == (rank == 0)
        x, mask, labels = _global_batch(world)
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        results = {}
        for model_name, name, keep in CASES:
            ref = _model(model_name)  # single process, whole global batch, no gather
            ref_loss = _step(ref, build_loss(LossConfig(name=name, keep_positive=keep, gather=False)),
                             x, mask, labels)
            ddp = torch.nn.parallel.DistributedDataParallel(_model(model_name))
            loss = _step(ddp, build_loss(LossConfig(name=name, keep_positive=keep, gather=True)),
                         x[:, sl], mask[:, sl], labels[sl])
            dist.all_reduce(loss)
            grad_diff = max((p.grad - q.grad).abs().max().item()
                            for p, q in zip(ddp.module.parameters(), ref.parameters(), strict=True))
            grad_scale = max(q.grad.abs().max().item() for q in ref.parameters())
            results[f"{model_name}/{name}/{keep}"] = dict(
                loss_diff=abs(loss.item() / world - ref_loss.item()), grad_diff=grad_diff,
                grad_scale=grad_scale)
        # the raw gather: values in rank order, gradient = sum over ranks of the upstream grads
        t = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        g = all_gather_with_grad(t)
        w = torch.arange(g.numel(), dtype=g.dtype).view_as(g) * (rank + 1)
        (g * w).sum().backward()
        results["gather_values_ok"] = all(
            torch.equal(g[2 * r:2 * r + 2].detach(), torch.full((2, 3), r + 1.0, dtype=g.dtype))
            for r in range(world))
        base = torch.arange(g.numel(), dtype=g.dtype).view_as(g) * (world * (world + 1) // 2)
        results["gather_grad_ok"] = torch.equal(t.grad, base[rank * 2:(rank + 1) * 2])
        torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_gloo_processes_match_single_process_global_batch(world):
    # every registered loss is covered (dino, orca: their own 1-vs-2-process tests in
    # tests/test_dino.py and tests/test_orca.py), and both encoders
    assert {n for _, n, _ in CASES} == set(LOSSES) - {"dino", "orca"}
    assert {m for m, _, _ in CASES} == set(MODELS)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(world, _free_port(), d), nprocs=world, join=True)
        results = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]
    for r, res in enumerate(results):
        assert res.pop("gather_values_ok") and res.pop("gather_grad_ok"), r
        assert len(res) == len(CASES)
        for case, v in res.items():
            assert v["grad_scale"] > 1e-3, case  # the comparison is not vacuous
            assert v["loss_diff"] < 1e-10, (r, case, v)
            assert v["grad_diff"] < 1e-5, (r, case, v)
