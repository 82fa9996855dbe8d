"""Does a resumed run continue the same run? Compare it with the same run uninterrupted.

Both runs have the same config and seed, dropout on (every step reseeds torch's generators from
(seed, rank, step): clrdist.train.step.seed_step). The resumed run must end with the uninterrupted
run's weights, optimiser state (the full state, or every rank's ZeRO shard) and scheduler, and
log the same training loss at every step, within ``TOL``; a re-initialised model is checked to
sit many times ``TOL`` away, so the comparison can fail.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from _train_toys import CONFIGS, tiny_overrides

from clrdist import tracking
from clrdist.factory import initial_model
from clrdist.train import checkpoint
from clrdist.train.trainer import TrainResult

TOL = 1e-5  # max |resumed - uninterrupted| / (1 + max |uninterrupted|), per tensor

# The run the killed-driver test (tests/test_runs_resume.py) and the SIGUSR1 tests
# (tests/test_slurm_signals.py) interrupt: 2 workers x 18 steps x 2 epochs on the toy splits,
# a checkpoint every 6 steps. With the same engine it is the same run in both, so their one
# uninterrupted reference for DDP is computed once (the ``ddp_reference`` fixture, conftest.py).
RESUME_SETS = ("optim.epochs=2", "data.batch_size=32", "eval.lct=false", "eval.every_epochs=null",
               "checkpoint.every_steps=6")


def driver_argv(stores: Path, tmp: Path, *more: str) -> list[str]:
    """`clrdist train configs/demo.yaml --json` on the toy splits, writing under ``tmp``."""
    sets = [*tiny_overrides(stores, tmp), *more]
    return [sys.executable, "-m", "clrdist.cli", "train", str(CONFIGS / "demo.yaml"), "--json",
            *[a for o in sets for a in ("--set", o)]]


def json_summary(stdout: str) -> dict:
    """The --json summary among Ray's forwarded worker lines: from a line "{" to a line "}"."""
    lines = stdout.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start:lines.index("}", start) + 1]))


def uninterrupted(stores: Path, tmp: Path, *sets: str) -> TrainResult:
    """The run never interrupted: `clrdist train` in its own process and Ray cluster."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never a test's cluster
    done = subprocess.run(driver_argv(stores, tmp, *sets, "tracking.run_name=uninterrupted"),
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json_summary(done.stdout)
    assert summary["resumed"] is False
    return TrainResult(run_id=summary["run_id"], checkpoint_path=summary["checkpoint"],
                       tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")


def flat(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor and number in nested dicts / lists, keyed by its path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in flat(val, f"{prefix}/{i}").items()}
    if isinstance(obj, torch.Tensor):
        return {prefix: obj.detach().double()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix: torch.tensor(float(obj), dtype=torch.float64)}
    return {}


def saved_state(path, world: int = 2) -> dict[str, torch.Tensor]:
    """Weights, optimiser, scheduler and every rank's optimiser shard of one checkpoint."""
    state, meta = checkpoint.load(path)
    out = flat({k: state[k] for k in ("model", "optimizer", "scheduler") if k in state})
    for rank in range(world):
        if (shard := checkpoint.load_rank_state(path, rank)) is not None:
            out.update(flat(shard.get("optimizer", shard), f"/rank{rank}"))
    return out


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (1 + b.abs().max())) if a.numel() else 0.0


def assert_same_run(resumed_ckpt, straight_ckpt, cfg, uri_resumed, run_resumed, uri_straight,
                    run_straight):
    """The resumed run ends where the uninterrupted one does and logged the same losses."""
    a, b = saved_state(resumed_ckpt), saved_state(straight_ckpt)
    assert set(a) == set(b), set(a) ^ set(b)
    assert any(k.startswith("/optimizer/state") or k.startswith("/rank") for k in b), sorted(b)[:5]
    worst = max(a, key=lambda k: distance(a[k], b[k]))
    assert distance(a[worst], b[worst]) < TOL, (worst, distance(a[worst], b[worst]))

    # the comparison has teeth: the weights moved far from a re-initialised model
    init = flat(initial_model(cfg.model, cfg.seed).state_dict(), "/model")
    moved = max(distance(init[k], b[k]) for k in init)
    assert moved > 1000 * TOL, moved

    # the loss curve: every logged step of the resumed run (steps logged twice, before the
    # interruption and again after the resume, included) equals the uninterrupted run's
    straight = dict(tracking.metric_history(uri_straight, run_straight, "train_loss"))
    resumed = tracking.metric_history(uri_resumed, run_resumed, "train_loss")
    assert {s for s, _ in resumed} == set(straight)
    for step, value in resumed:
        assert math.isclose(value, straight[step], rel_tol=TOL), (step, value, straight[step])
    first, last = min(straight), max(straight)
    assert abs(straight[first] - straight[last]) > 1000 * TOL * abs(straight[last])  # it moved
