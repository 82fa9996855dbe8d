"""The distributed engines (clrdist.train.engine) in one process, without Ray.

DDPEngine with Ray Train's ``prepare_model`` as it is at world size 1 (no DDP wrapper): the step
against a hand-written AdamW step, the learning-rate schedule, clipping, and an exact resume
through a checkpoint directory. DeepSpeedEngine on CPU with a real gloo process group of world
size 1: a resume restores model, scheduler and optimiser state.
"""

import copy
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist

from clrdist.config import RunConfig
from clrdist.factory import build_model
from clrdist.precision import resolve
from clrdist.train import checkpoint
from clrdist.train.engine import DDPEngine, LossGuard, NonFiniteLoss, lr_lambda

# dropout 0: the steps compared below draw no random numbers
TINY = {"data": {"batch_size": 4},
        "model": {"model_dim": 16, "ff_dim": 32, "head_dims": [16], "output_dim": 8, "dropout": 0.0},
        "optim": {"lr": 1e-2, "warmup_steps": 2, "weight_decay": 0.01},
        "scaling": {"num_workers": 1}}


def config(**sections) -> RunConfig:
    raw = copy.deepcopy(TINY)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return RunConfig.model_validate(raw)


def batch(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 10, cfg.model.input_dim, generator=g), torch.ones(4, 10, dtype=torch.bool)


def loss_of(model, cfg, seed):
    # the forward under the run's precision policy, as the training step runs it: on a CPU with
    # native bf16, DeepSpeed's bf16 mode holds bf16 weights that only autocast feeds
    with resolve(cfg.scaling.precision, "cpu").forward_context():
        rep, z = model(*batch(cfg, seed))
    return z.float().square().mean()


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def optimiser_moments(state: dict) -> list[torch.Tensor]:
    # DeepSpeed's bf16 mode without ZeRO wraps AdamW (FP16_UnfusedOptimizer: fp32 master
    # weights in "fp32_groups", AdamW's own state in "optimizer_state_dict")
    state = state.get("optimizer_state_dict", state)
    return [t for s in state["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]


@pytest.fixture
def ddp(monkeypatch):
    """DDPEngine factory; ``prepare_model`` as Ray Train applies it to one CPU worker."""
    import ray.train.torch

    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)

    def make(cfg, total_steps=10, seed=0):
        torch.manual_seed(seed)
        return DDPEngine(build_model(cfg.model), cfg, total_steps)

    return make


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    f = lr_lambda(config(optim={"warmup_steps": 4}), total_steps=104)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(54) == pytest.approx(0.55) and f(104) == pytest.approx(0.1)
    assert f(10**6) == pytest.approx(0.1)
    assert lr_lambda(config(optim={"warmup_steps": 0}), 10)(0) == 1.0


def test_ddp_engine_step_is_an_adamw_step_with_the_scheduled_rate(ddp):
    cfg = config()
    engine = ddp(cfg)
    reference = copy.deepcopy(engine.module)
    opt = torch.optim.AdamW(reference.parameters(), lr=cfg.optim.lr, weight_decay=0.01)
    rates = []
    for step in range(3):
        info = engine.step(loss_of(engine.model, cfg, step))
        rates.append(info["lr"])
        assert "grad_norm" not in info  # no clipping configured
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * lr_lambda(cfg, 10)(step)
        opt.zero_grad()
        loss_of(reference, cfg, step).backward()
        opt.step()
    assert rates == pytest.approx([5e-3, 1e-2, 1e-2])
    assert engine.module is engine.model  # no wrapper at world size 1
    for p, q in zip(engine.module.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_ddp_engine_clips_the_global_gradient_norm(ddp):
    cfg = config(optim={"grad_clip": 1e-3})
    engine = ddp(cfg)
    loss = loss_of(engine.model, cfg, 0) * 1e3
    loss.backward(retain_graph=True)
    norm = torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in engine.module.parameters() if p.grad is not None]))
    info = engine.step(loss)  # zeroes the gradients first, so the same norm again
    assert info["grad_norm"] == pytest.approx(float(norm), rel=1e-5) and float(norm) > 1e-3
    clipped = torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in engine.module.parameters() if p.grad is not None]))
    assert float(clipped) == pytest.approx(1e-3, rel=1e-3)


def test_ddp_engine_resumes_exactly_through_a_checkpoint(ddp, tmp_path):
    cfg = config()
    a = ddp(cfg)
    for step in range(3):
        a.step(loss_of(a.model, cfg, step))
    d = checkpoint.save(tmp_path, state=a.state_dict(), step=3, epoch=0, cfg=cfg, rank=0,
                        stream_state=None)
    b = ddp(cfg, seed=1)  # other initial weights, fresh optimiser and schedule
    state, _ = checkpoint.load(d)
    b.load_state_dict(state)
    assert same_tensors(b.module.state_dict(), a.module.state_dict())
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
    for u, v in zip(optimiser_moments(b.optimizer.state_dict()),
                    optimiser_moments(a.optimizer.state_dict()), strict=True):
        assert torch.equal(u, v)
    for step in range(3, 5):  # the resumed run continues exactly as the original
        assert a.step(loss_of(a.model, cfg, step)) == b.step(loss_of(b.model, cfg, step))
    assert same_tensors(b.module.state_dict(), a.module.state_dict())


def test_loss_guard_names_the_first_non_finite_step():
    guard = LossGuard(torch.device("cpu"))
    guard.update(torch.tensor(1.0), 1)
    guard.check()
    guard.update(torch.tensor(float("nan")), 5)
    guard.update(torch.tensor(float("inf")), 6)
    guard.update(torch.tensor(2.0), 7)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 5"):
        guard.check()


# ---- DeepSpeed on CPU, one gloo process -------------------------------------------------------

@pytest.fixture(scope="module")
def gloo_world_of_one():
    """torch.distributed with gloo, world size 1, in this process (DeepSpeed reuses it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in [*env, "DS_ACCELERATOR"]}
    os.environ.update(env)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:  # DeepSpeed caches a clone of the world group: gone with the group
        groups._WORLD_GROUP = None
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def deepspeed_engine(cfg, seed=0):
    from clrdist.train.engine import DeepSpeedEngine

    torch.manual_seed(seed)
    return DeepSpeedEngine(build_model(cfg.model), cfg, total_steps=10)


def test_deepspeed_engine_resumes_with_its_optimiser_state(gloo_world_of_one, tmp_path):
    cfg = config(scaling={"engine": "deepspeed", "zero_stage": 0})
    a = deepspeed_engine(cfg)
    for step in range(3):
        a.step(loss_of(a.model, cfg, step))
    d = checkpoint.save(tmp_path, state=a.state_dict(), step=3, epoch=0, cfg=cfg, rank=0,
                        stream_state=None)
    state, _ = checkpoint.load(d)
    assert {"model", "scheduler", "optimizer"} <= set(state)
    b = deepspeed_engine(cfg, seed=1)
    b.load_state_dict(state)
    assert same_tensors(b.module.state_dict(), a.module.state_dict())
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
    moments_a = optimiser_moments(a.optimizer.state_dict())
    moments_b = optimiser_moments(b.optimizer.state_dict())
    assert len(moments_a) == 2 * len(list(a.module.parameters()))
    assert all(torch.equal(u, v) for u, v in zip(moments_a, moments_b, strict=True))
    for step in range(3, 5):
        assert a.step(loss_of(a.model, cfg, step)) == b.step(loss_of(b.model, cfg, step))
    assert same_tensors(b.module.state_dict(), a.module.state_dict())


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_deepspeed_zero_engine_resumes_with_its_optimiser_shard(gloo_world_of_one, tmp_path,
                                                                zero_stage):
    """ZeRO 1/2 partition AdamW's state over ranks: each rank's shard goes into its own file
    and comes back, so the resumed steps are the uninterrupted ones."""
    cfg = config(scaling={"engine": "deepspeed", "zero_stage": zero_stage})
    a = deepspeed_engine(cfg)
    for step in range(3):
        a.step(loss_of(a.model, cfg, step))
    d = checkpoint.save(tmp_path, state=a.state_dict(), step=3, epoch=0, cfg=cfg, rank=0,
                        stream_state=None, rank_state=a.rank_state())
    state, _ = checkpoint.load(d)
    own = checkpoint.load_rank_state(d, 0)  # weights_only=True: plain tensors only
    assert "optimizer" not in state and own["world_size"] == 1
    moments_a = optimiser_moments(own["optimizer"])
    assert moments_a and all(m.abs().sum() > 0 for m in moments_a)
    b = deepspeed_engine(cfg, seed=1)
    b.load_state_dict(state)
    b.load_rank_state(own)
    moments_b = optimiser_moments(b.rank_state()["optimizer"])
    assert all(torch.equal(u, v) for u, v in zip(moments_a, moments_b, strict=True))
    for step in range(3, 5):
        assert a.step(loss_of(a.model, cfg, step)) == b.step(loss_of(b.model, cfg, step))
    assert same_tensors(b.module.state_dict(), a.module.state_dict())
    # without the shard the moments restart from zero and the next step differs
    c = deepspeed_engine(cfg, seed=1)
    c.load_state_dict(state)
    d_ = deepspeed_engine(cfg, seed=1)
    d_.load_state_dict(state)
    d_.load_rank_state(own)
    c.step(loss_of(c.model, cfg, 3))
    d_.step(loss_of(d_.model, cfg, 3))
    assert not same_tensors(c.module.state_dict(), d_.module.state_dict())


def test_a_zero_shard_from_another_world_size_is_refused(gloo_world_of_one):
    from clrdist.train.engine import CheckpointMismatch

    cfg = config(scaling={"engine": "deepspeed", "zero_stage": 1})
    a = deepspeed_engine(cfg)
    own = a.rank_state()
    with pytest.raises(CheckpointMismatch, match="partitioned over 2 ranks, this run has 1"):
        a.load_rank_state({**own, "world_size": 2})
