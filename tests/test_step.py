"""The training step (clrdist.train.step): one function for the loop and the benchmarks, sync-free
with the GPU settings (counted on the CPU by clrdist.syncs), importable without Ray."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clrdist.config import load_config
from clrdist.data.toy import toy_jets
from clrdist.factory import build_loss, build_views, initial_model
from clrdist.precision import resolve
from clrdist.syncs import count_syncs
from clrdist.train.engine import LocalEngine, LossGuard
from clrdist.train.step import set_sync_free, train_step

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TRANSFORMER = ["model.model_dim=16", "model.ff_dim=32", "model.heads=2", "model.layers=1"]
SMALL = [*TRANSFORMER, "model.head_dims=[16]", "model.output_dim=8", "optim.grad_clip=1.0", "data.batch_size=16",
         "data.global_batch_size=null"]  # the published configs set the global batch


def jet_batch(B=16, P=20, seed=0):
    parts = [toy_jets(B // 2, "top", seed=seed, n_particles=P),
             toy_jets(B // 2, "qcd", seed=seed + 1, n_particles=P)]
    return {"particles": torch.as_tensor(np.concatenate([p["particles"] for p in parts]), dtype=torch.float32),
            "mask": torch.as_tensor(np.concatenate([p["mask"] for p in parts])),
            "label": torch.arange(B) % 2}


def event_batch(B=16, seed=0):
    """ADC2021-shaped events (B, 19, 3) with holes in the object rows."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, 19, generator=g) < 0.5
    mask[:, 0] = True
    pt = (torch.rand(B, 19, generator=g) * 100 + 20) * mask
    eta = (torch.rand(B, 19, generator=g) - 0.5) * 3 * mask
    eta[:, 0] = 0
    phi = (torch.rand(B, 19, generator=g) - 0.5) * 6 * mask
    return {"particles": torch.stack([pt, eta, phi], -1), "mask": mask, "label": torch.arange(B) % 2}


CASES = {
    "jetclr": ("demo.yaml", ["data.n_particles=16", "augment.slots=20"], jet_batch),
    "darkclr": ("darkclr_svj.yaml", ["data.n_particles=20"], jet_batch),
    "darkclr_anomaly_norm": ("darkclr_svj.yaml", ["data.n_particles=20", "loss.anomaly_norm=1.0"],
                             jet_batch),
    "event_transformer": ("anomalyclr_adc2021.yaml", [], event_batch),
    "event_dense": ("adc2021_dense_masking.yaml", ["model.dense_dims=[16,8]"], event_batch),
}
DENSE = {"event_dense"}  # the transformer's fields are not the dense encoder's (config unions)


def setup(case, sync_free=True, precision="fp32"):
    name, more, make = CASES[case]
    small = SMALL[len(TRANSFORMER):] if case in DENSE else SMALL
    cfg = load_config(CONFIGS / name, [*small, *more])
    model = set_sync_free(initial_model(cfg.model, 0), sync_free)
    engine = LocalEngine(model, cfg, total_steps=10, fused=sync_free)  # fused: as on CUDA
    views = build_views(cfg, fixed=sync_free)
    return cfg, engine, build_loss(cfg.loss), views, make(), resolve(precision, "cpu")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_full_step_has_no_host_sync_with_the_gpu_settings(case):
    cfg, engine, loss_fn, views, batch, prec = setup(case)
    gen = torch.Generator().manual_seed(0)
    guard = LossGuard(torch.device("cpu"))
    train_step(engine, loss_fn, views, batch, gen, cfg, prec, step=1, guard=guard)  # warm-up
    before = [p.detach().clone() for p in engine.module.parameters()]
    with count_syncs() as c:
        out = train_step(engine, loss_fn, views, batch, gen, cfg, prec, step=2, guard=guard)
    assert c.count == 0, c.summary()
    assert torch.isfinite(out.terms["loss"])
    assert "grad_norm" in out.info and isinstance(out.info["grad_norm"], torch.Tensor)
    assert any(not torch.equal(a, p) for a, p in zip(before, engine.module.parameters(), strict=True))
    with count_syncs() as c:  # a logging step reads once
        m = out.metrics()
    assert c.count <= 2 and np.isfinite(m["train_loss"]) and m["grad_norm"] > 0


def test_the_cpu_defaults_do_sync_so_the_counter_sees_the_step():
    """The counter is not blind: the CPU shortcuts (trimming, compact masks) are host reads."""
    cfg, engine, loss_fn, views, batch, prec = setup("jetclr", sync_free=False)
    with count_syncs() as c:
        train_step(engine, loss_fn, views, batch, torch.Generator().manual_seed(0), cfg, prec,
                   step=1)
    assert c.count > 0


def test_guard_records_a_non_finite_loss_without_reading_it():
    cfg, engine, loss_fn, views, batch, prec = setup("jetclr")
    batch["particles"][0, 0, 0] = float("nan")
    guard = LossGuard(torch.device("cpu"))
    with count_syncs() as c:
        train_step(engine, loss_fn, views, batch, torch.Generator().manual_seed(0), cfg, prec,
                   step=7, guard=guard)
    assert c.count == 0
    assert int(guard.first) == 7


def test_sync_free_and_cpu_paths_train_the_same_model_in_distribution():
    """Same init, same batches: the fixed-slot step and the CPU step give losses of the same size
    (different random numbers: not bit-equal)."""
    losses = {}
    for sync_free in (True, False):
        cfg, engine, loss_fn, views, batch, prec = setup("jetclr", sync_free=sync_free)
        gen = torch.Generator().manual_seed(1)
        losses[sync_free] = [float(train_step(engine, loss_fn, views, batch, gen, cfg, prec,
                                              step=i).terms["loss"].detach()) for i in range(3)]
    assert np.allclose(losses[True], losses[False], rtol=0.1)


def test_step_module_imports_no_ray():
    code = ("import sys, clrdist.train.step; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bf16_forward_with_a_float32_loss():
    cfg, engine, loss_fn, views, batch, prec = setup("darkclr", precision="bf16")
    out = train_step(engine, loss_fn, views, batch, torch.Generator().manual_seed(0), cfg, prec,
                     step=1)
    assert out.z.dtype == torch.bfloat16  # the encoder ran under bf16 autocast
    assert out.terms["loss"].dtype == torch.float32
    assert next(engine.module.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_compiled_encoder_equals_eager():
    """model.compile: true -> torch.compile of the encoder; same outputs and gradients."""
    from clrdist.train.step import prepare_model

    cfg = load_config(CONFIGS / "demo.yaml", [*SMALL, "model.dropout=0.0", "model.compile=true"])
    eager = prepare_model(initial_model(cfg.model, 0), sync_free=True)
    compiled = prepare_model(initial_model(cfg.model, 0), sync_free=True, compile=cfg.model.compile)
    x = torch.randn(8, 12, cfg.model.input_dim).abs()
    mask = torch.arange(12)[None, :] < torch.tensor([12, 3, 7, 1, 12, 5, 9, 2])[:, None]
    outs = []
    for model in (eager, compiled):
        rep, z = model(x, mask)
        z.square().sum().backward()
        outs.append((rep.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert set(dict(compiled.named_parameters())) == set(dict(eager.named_parameters()))


def test_seed_step_makes_dropout_and_views_a_function_of_seed_rank_and_step():
    """A resumed run draws what the uninterrupted one drew: dropout masks (torch's global
    generator) and views (the step's generator) depend on (seed, rank, step) only."""
    from clrdist.train.inputs import view_inputs
    from clrdist.train.loop import seed_step

    cfg = load_config(CONFIGS / "demo.yaml", [*SMALL, "model.dropout=0.5", "data.n_particles=16",
                                              "augment.slots=20"])
    model = initial_model(cfg.model, 0).train()
    views = build_views(cfg)
    batch = jet_batch(8)
    gen = torch.Generator()

    def forward(step, rank=0):
        seed_step(gen, 7, rank, step)
        x, mask = view_inputs(batch["particles"], batch["mask"], cfg, views, gen, device="cpu")
        return model(x, mask)[1]

    a = forward(5)
    torch.rand(1000)  # whatever ran in between (another step, an evaluation)
    assert torch.equal(forward(5), a)
    assert not torch.allclose(forward(6), a) and not torch.allclose(forward(5, rank=1), a)
    model.eval()
    seed_step(gen, 7, 0, 5)
    x, mask = view_inputs(batch["particles"], batch["mask"], cfg, views, gen, device="cpu")
    assert not torch.allclose(model(x, mask)[1], a)  # dropout was on in training mode
