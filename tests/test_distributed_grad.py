"""N real gloo processes (N = 2 and 3) vs one process on the concatenated global batch.

Each rank computes its loss for its LOCAL rows against all-gathered columns, backpropagates
through DistributedDataParallel (which averages gradients over ranks); every parameter gradient
must equal the single-process gradient on the global batch, for every loss, for the transformer
and for the dense encoder with its normalisation layers (LayerNorm, the default: BatchNorm
statistics cannot be synchronised under gloo, see clrdist/models/dense.py). Three ranks make
W - 1, W / 2 and 1 / W scale errors visible (with two they coincide).
"""

import functools

import pytest
import torch
from _gloo import ddp_vs_one_process, on_ranks

from clrdist.config import LossConfig, ModelConfig
from clrdist.distributed import all_gather_with_grad, get_rank, get_world_size, is_rank_zero
from clrdist.factory import build_loss, build_model
from clrdist.losses import LOSSES

P = 10  # as in _gloo.global_batch
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


def _ranks(rank, world):
    assert get_rank() == rank and get_world_size() == world and is_rank_zero() == (rank == 0)
    results = {}
    for model_name, name, keep in CASES:
        def step(model, module, x, mask, labels, gather, name=name, keep=keep):
            loss_fn = build_loss(LossConfig(name=name, keep_positive=keep, gather=gather))
            return _step(model, loss_fn, x, mask, labels), None

        results[f"{model_name}/{name}/{keep}"], _, _ = ddp_vs_one_process(
            rank, functools.partial(_model, model_name), step, world=world, n_labels=3)
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
    return results


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
@pytest.mark.parametrize("world", [2, 3])
def test_gloo_processes_match_single_process_global_batch(world):
    # every registered loss is covered (dino, orca: their own 1-vs-2-process tests in
    # tests/test_dino.py and tests/test_orca.py), and both encoders
    assert {n for _, n, _ in CASES} == set(LOSSES) - {"dino", "orca"}
    assert {m for m, _, _ in CASES} == set(MODELS)
    results = on_ranks(functools.partial(_ranks, world=world), world=world)
    for r, res in enumerate(results):
        assert res.pop("gather_values_ok") and res.pop("gather_grad_ok"), r
        assert len(res) == len(CASES)
        for case, v in res.items():
            assert v["grad_scale"] > 1e-3, case  # the comparison is not vacuous
            assert v["loss_diff"] < 1e-10, (r, case, v)
            assert v["grad_diff"] < 1e-5, (r, case, v)
