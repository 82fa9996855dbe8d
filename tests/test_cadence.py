"""Checkpoint cadence (steps, minutes, epochs, the end), the collective timeout, and validation
shards gathered back in order across real gloo processes."""

import os

import pytest
import torch
from _gloo import on_ranks

from clrdist.config import RunConfig
from clrdist.distributed import gather_shards
from clrdist.train.cadence import Cadence


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_steps_minutes_epochs_and_the_end():
    steps = Cadence(every_steps=5, every_minutes=None)
    assert [s for s in range(1, 21) if steps.in_epoch(s, log_step=True)] == [5, 10, 15, 20]
    assert not steps.at_epoch_end(1, final=False) and steps.at_epoch_end(3, final=True)

    clock = Clock()
    minutes = Cadence(every_minutes=2.0, clock=clock)
    clock.t = 119.0
    assert not minutes.in_epoch(10, log_step=True)
    clock.t = 121.0
    assert not minutes.in_epoch(11, log_step=False)  # decided at logging steps only
    assert minutes.in_epoch(20, log_step=True)
    minutes.saved()  # the clock restarts at every checkpoint
    clock.t = 200.0
    assert not minutes.in_epoch(30, log_step=True)

    epochs = Cadence(every_minutes=None, every_epochs=2)
    assert [e for e in range(1, 7) if epochs.at_epoch_end(e, final=False)] == [2, 4, 6]


def test_defaults_checkpoint_by_time_not_by_epoch():
    c = RunConfig().checkpoint
    assert (c.every_steps, c.every_epochs, c.every_minutes) == (None, None, 30.0)
    cadence = Cadence.from_config(c, "cpu")
    assert not any(cadence.at_epoch_end(e, final=False) for e in range(1, 10))


def test_the_process_group_has_the_configured_collective_timeout():
    pytest.importorskip("ray.train")
    from clrdist.train.trainer import torch_config

    cfg = RunConfig.model_validate({"scaling": {"collective_timeout_s": 77}})
    tc = torch_config(cfg)
    assert tc.timeout_s == 77 and tc.backend == "gloo"
    assert torch_config(RunConfig()).timeout_s == RunConfig().scaling.collective_timeout_s


def _shards(rank, n=11):
    world = torch.distributed.get_world_size()
    whole = torch.arange(n * 2, dtype=torch.float32).view(n, 2)
    return {"got": gather_shards(whole[rank::world] * 1.0, n), "want": whole}


def test_shards_come_back_in_order_on_every_rank():
    for r, out in enumerate(on_ranks(_shards)):  # 3 ranks, 11 rows: 4, 4 and 3 rows each
        assert torch.equal(out["got"], out["want"]), r
    whole = torch.ones(5, 3)
    assert gather_shards(whole, 5) is whole  # one process: itself


def test_ray_trains_controller_polls_every_quarter_second_unless_the_user_says(monkeypatch):
    """Ray Train's controller takes one report per poll (2 s by default): while a trainer runs,
    clrdist asks for 0.25 s, a value the user exported wins, and nothing is left behind."""
    from clrdist.train.trainer import CONTROLLER_POLL_ENV, controller_poll_interval

    monkeypatch.delenv(CONTROLLER_POLL_ENV, raising=False)
    with controller_poll_interval():
        assert os.environ[CONTROLLER_POLL_ENV] == "0.25"
    assert CONTROLLER_POLL_ENV not in os.environ
    with pytest.raises(RuntimeError), controller_poll_interval():  # restored on errors too
        raise RuntimeError
    assert CONTROLLER_POLL_ENV not in os.environ
    monkeypatch.setenv(CONTROLLER_POLL_ENV, "2")
    with controller_poll_interval():
        assert os.environ[CONTROLLER_POLL_ENV] == "2"
    assert os.environ[CONTROLLER_POLL_ENV] == "2"
