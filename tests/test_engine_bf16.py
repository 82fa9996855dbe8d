"""DeepSpeed's bf16 mode on CPU (gloo, one rank): bf16 weights with fp32 master weights in the
optimiser, as a GPU run with ``scaling.precision`` bf16 or auto trains.

The engine turns it on wherever the precision policy resolves to bf16 on the run's device
(``deepspeed_bf16``), so ``scaling.precision: bf16`` runs it here. Covered: training steps under
ZeRO 0 and 1, the training loop's validation (``loop.validate`` -> ``make_encoder``) on the bf16
module, and an exact resume through a checkpoint (tolerance: none, ``torch.equal``; the same
process and kernels make the steps bit-identical), which a re-initialised engine, and one given
the bf16 weights without the fp32 master weights, both fail.
"""

import numpy as np
import pytest
import torch
from test_engine import (  # noqa: F401  (gloo_world_of_one: the fixture, used by name)
    batch,
    config,
    deepspeed_engine,
    gloo_world_of_one,
    same_tensors,
)

from clrdist.data.toy import toy_dataset
from clrdist.factory import build_encoder, build_model
from clrdist.precision import resolve
from clrdist.train import checkpoint
from clrdist.train.engine import deepspeed_bf16

pytest.importorskip("deepspeed")

BF16 = resolve("bf16", "cpu")


def bf16_config(zero_stage: int, **sections):
    return config(scaling={"engine": "deepspeed", "zero_stage": zero_stage, "precision": "bf16"},
                  **sections)


def loss_of(model, cfg, seed):
    """The training step's precision: the forward under bf16 autocast, the loss in float32."""
    with BF16.forward_context():
        rep, z = model(*batch(cfg, seed))
    return z.float().square().mean()


def masters(engine) -> torch.Tensor:
    """The optimiser's fp32 master weights, flattened in parameter order."""
    opt = engine.optimizer
    if engine.model.zero_optimization_stage() == 0:
        return torch.cat([p.detach().reshape(-1) for group in opt.fp32_groups for p in group])
    return torch.cat([p.detach().reshape(-1) for p in opt.single_partition_of_fp32_groups])


def flat_weights(engine) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in engine.module.parameters()])


def test_deepspeed_bf16_follows_the_precision_policy():
    assert deepspeed_bf16(bf16_config(0))
    assert not deepspeed_bf16(config(scaling={"engine": "deepspeed", "precision": "fp32"}))
    gpu = config(scaling={"engine": "deepspeed", "precision": "auto", "use_gpu": True})
    assert deepspeed_bf16(gpu)  # auto is bf16 on GPUs


@pytest.mark.integration
@pytest.mark.usefixtures("gloo_world_of_one")
@pytest.mark.parametrize("zero_stage", [0, 1])
def test_deepspeed_bf16_trains_bf16_weights_from_fp32_masters(zero_stage):
    cfg = bf16_config(zero_stage)
    engine = deepspeed_engine(cfg)
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    start = masters(engine).clone()
    assert start.dtype == torch.float32
    losses = []
    for _ in range(4):
        loss = loss_of(engine.model, cfg, 0)  # one batch: the loss must come down
        losses.append(float(loss.detach()))
        engine.step(loss)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    moved = masters(engine)
    # the masters take the small AdamW steps (lr 1e-2) that bf16 weights would round away...
    assert 1e-4 < float((moved - start).abs().max()) < 0.1
    # ...and the module's bf16 weights are the masters rounded
    n = flat_weights(engine).numel()
    assert torch.equal(flat_weights(engine), moved[:n].to(torch.bfloat16))


@pytest.mark.integration
@pytest.mark.usefixtures("gloo_world_of_one")
def test_validation_runs_on_the_deepspeed_bf16_module():
    pytest.importorskip("ray")
    from clrdist.train.loop import validate

    cfg = bf16_config(1, model={"input_features": "pt", "input_dim": 3, "heads": 2, "layers": 1},
                      data={"n_particles": 20})
    engine = deepspeed_engine(cfg)
    engine.step(loss_of(engine.model, cfg, 0))
    val = (toy_dataset(40, seed=1, n_particles=20), toy_dataset(40, seed=2, n_particles=20))
    metrics = validate(engine, cfg, val, "cpu")  # float32 store inputs, bf16 weights
    assert 0.0 <= metrics["val_lct_auc"] <= 1.0 and np.isfinite(metrics["val_lct_auc"])
    # what validation encodes is the fp32 encoder of the same weights, to bf16 rounding
    fp32 = build_model(cfg.model)
    fp32.load_state_dict({k: v.float() for k, v in engine.module.state_dict().items()})
    ours = build_encoder(engine.module, cfg, autocast=torch.bfloat16)(val[1])
    ref = build_encoder(fp32, cfg, autocast=None)(val[1])
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0.05, atol=0.05 * np.abs(ref).max())
    engine.train()  # training goes on after validation
    engine.step(loss_of(engine.model, cfg, 1))
    assert next(engine.module.parameters()).dtype == torch.bfloat16


@pytest.mark.integration
@pytest.mark.usefixtures("gloo_world_of_one")
@pytest.mark.parametrize("zero_stage", [0, 1])
def test_deepspeed_bf16_resumes_exactly(tmp_path, zero_stage):
    cfg = bf16_config(zero_stage)
    a = deepspeed_engine(cfg)
    for step in range(3):
        a.step(loss_of(a.model, cfg, step))
    d = checkpoint.save(tmp_path, state=a.state_dict(), step=3, epoch=0, cfg=cfg, rank=0,
                        stream_state=None, rank_state=a.rank_state())
    state, _ = checkpoint.load(d)  # weights_only=True
    own = checkpoint.load_rank_state(d, 0)
    assert (own is None) == (zero_stage == 0)

    def resumed(with_optimiser=True):
        e = deepspeed_engine(cfg, seed=1)  # other initial weights and masters
        if with_optimiser:
            e.load_state_dict(state)
            if own is not None:
                e.load_rank_state(own)
        else:  # the bf16 weights and the schedule only: the fp32 masters stay seed 1's
            e.load_state_dict({k: v for k, v in state.items() if k != "optimizer"})
        return e

    b, fresh, weights_only = resumed(), deepspeed_engine(cfg, seed=1), resumed(False)
    assert torch.equal(masters(b), masters(a))
    for step in range(3, 5):  # tolerance: none (bit-identical)
        la, lb = loss_of(a.model, cfg, step), loss_of(b.model, cfg, step)
        assert torch.equal(la, lb)
        assert a.step(la) == b.step(lb)
        for other in (fresh, weights_only):
            other.step(loss_of(other.model, cfg, step))
    assert same_tensors(b.module.state_dict(), a.module.state_dict())
    assert torch.equal(masters(b), masters(a))
    for other in (fresh, weights_only):
        assert not same_tensors(other.module.state_dict(), a.module.state_dict())
