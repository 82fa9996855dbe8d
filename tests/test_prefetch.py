"""DevicePrefetcher: a no-op on the CPU; one batch ahead on CUDA with the stream position of the
batch handed out (so a mid-epoch checkpoint resumes exactly); the precision policy."""

import itertools

import numpy as np
import pytest
import torch

from clrdist.data.prefetch import DevicePrefetcher
from clrdist.data.stream import ShardedStream
from clrdist.precision import fp32_region, resolve
from tests.test_stream import epoch_ids, ids, store  # noqa: F401  (the module's store fixture)


def stream(store):  # noqa: F811
    s = ShardedStream(store, batch_size=24, seed=3, shuffle_buffer=80, num_threads=1)
    s.set_epoch(1)
    return s


def test_on_the_cpu_it_is_a_no_op(store):  # noqa: F811
    pre = DevicePrefetcher("cpu")
    assert not pre.active
    got = [ids(b) for b in pre(stream(store))]
    for a, b in zip(got, epoch_ids(stream(store)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(isinstance(b["particles"], np.ndarray) for b in itertools.islice(pre(stream(store)), 2))


class _Ahead(DevicePrefetcher):
    """The CUDA logic with the copy replaced by a record of what was read, for CPU tests."""

    def __init__(self):
        super().__init__("cpu")
        self.active, self.read = True, 0

    def _to_device(self, batch):
        self.read += 1
        return batch


def test_reads_one_ahead_and_checkpoints_the_position_handed_out(store):  # noqa: F811
    s, pre = stream(store), _Ahead()
    it = pre(s)
    first = [ids(next(it)) for _ in range(3)]
    assert pre.read == 4  # one batch ahead of the consumer
    assert s.state_dict()["batches_consumed"] == 4
    state = pre.stream_state()
    assert state["batches_consumed"] == 3 and state["epoch"] == 1
    fresh = ShardedStream(store, batch_size=24, seed=3, shuffle_buffer=80, num_threads=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(1)
    got = first + epoch_ids(fresh)
    for a, b in zip(got, epoch_ids(stream(store)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_last_batch_and_epoch_end(store):  # noqa: F811
    s, pre = stream(store), _Ahead()
    n = len(list(pre(s)))
    assert n == s.batches_per_epoch() and pre.read == n
    assert pre.stream_state() == s.state_dict() and s.epoch == 2


def test_precision_policy():
    assert resolve("fp32", "cuda").autocast is None and not resolve("fp32", "cuda").tf32
    bf = resolve("auto", "cuda")
    assert (bf.name, bf.autocast, bf.tf32) == ("bf16", torch.bfloat16, True)
    assert resolve("bf16", "cpu").autocast == torch.bfloat16 and not resolve("bf16", "cpu").tf32
    assert resolve("auto", "meta").name == "fp32"
    with pytest.raises(ValueError, match="scaling.precision"):
        resolve("fp16", "cpu")


def test_the_loss_region_is_float32_under_bf16_autocast():
    prec = resolve("bf16", "cpu")
    a = torch.randn(8, 4)
    with prec.forward_context():
        assert (a @ a.T).dtype == torch.bfloat16
        with fp32_region("cpu"):
            assert (a @ a.T).dtype == torch.float32


def test_an_old_config_with_scaling_bf16_fails_naming_the_new_key():
    from clrdist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="scaling.precision") as e:
        load_config(None, ["scaling.bf16=true"])
    assert "\n" not in str(e.value).strip()
