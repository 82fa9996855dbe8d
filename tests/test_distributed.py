"""clrdist.distributed without a process group (the gloo equivalence tests are in
tests/test_distributed_grad.py), the one fp32 normaliser, and SyncBatchNorm on both engines."""

import pytest
import torch
from torch import nn

from clrdist.config import RunConfig
from clrdist.distributed import all_reduce_min, all_reduce_sum, gather_rows, unit_fp32
from clrdist.train import engine


def test_single_process_collectives_are_identities():
    t = torch.arange(6.0).view(3, 2)
    assert gather_rows(t) == (t, 0) and gather_rows(t, grad=False)[0] is t
    assert all_reduce_sum(t.clone()).equal(t) and all_reduce_min(t.clone()).equal(t)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_unit_rows_are_at_least_float32(dtype):
    z = torch.randn(5, 7).to(dtype)
    u = unit_fp32(z)
    assert u.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(5, dtype=u.dtype))


def _bn_model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_sync_batchnorm_on_several_gpus_only():
    many = RunConfig.model_validate({"scaling": {"use_gpu": True, "num_workers": 2}})
    one = RunConfig.model_validate({"scaling": {"use_gpu": True, "num_workers": 1}})
    cpu = RunConfig.model_validate({"scaling": {"use_gpu": False, "num_workers": 2}})
    assert isinstance(engine.sync_batchnorm(_bn_model(), many)[1], nn.SyncBatchNorm)
    for cfg in (one, cpu):
        assert type(engine.sync_batchnorm(_bn_model(), cfg)[1]) is nn.BatchNorm1d


def test_the_deepspeed_engine_syncs_batchnorm_like_ddp(monkeypatch):
    deepspeed = pytest.importorskip("deepspeed", reason="deepspeed is an optional dependency")
    seen = {}

    def initialize(model, optimizer, lr_scheduler, config):
        seen["model"] = model
        raise RuntimeError("stop here")

    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kw: None)
    monkeypatch.setattr(deepspeed, "initialize", initialize)
    cfg = RunConfig.model_validate({"scaling": {"use_gpu": True, "num_workers": 2,
                                                "engine": "deepspeed"}})
    with pytest.raises(RuntimeError, match="stop here"):
        engine.DeepSpeedEngine(_bn_model(), cfg, total_steps=10)
    assert isinstance(seen["model"][1], nn.SyncBatchNorm)
