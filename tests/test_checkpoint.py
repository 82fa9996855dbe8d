"""Checkpoint directories (clrdist.train.checkpoint): save / load round trip, the newest complete
checkpoint of a run, the weights evaluation loads. No Ray: plain files on disk."""

import json

import numpy as np
import pytest
import torch

import clrdist
from clrdist.config import RunConfig
from clrdist.factory import build_model
from clrdist.train import checkpoint
from clrdist.train.checkpoint import CheckpointError

TINY = {"model": {"model_dim": 16, "ff_dim": 32, "head_dims": [16], "output_dim": 8}}


@pytest.fixture
def cfg():
    return RunConfig.model_validate(TINY)


def trained_state(cfg):
    """The state a DDP engine saves after two AdamW steps (model, optimiser moments, scheduler)."""
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    x, mask = torch.rand(4, 10, cfg.model.input_dim), torch.ones(4, 10, dtype=torch.bool)
    for _ in range(2):
        opt.zero_grad()
        model(x, mask)[1].square().mean().backward()
        opt.step()
        sched.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict()}


def assert_same(a, b):
    """Nested dicts / lists of tensors and plain values are equal, tensors exactly."""
    assert type(a) is type(b) or (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same(u, v)
    else:
        assert a == b


def test_save_load_round_trip_with_weights_only(cfg, tmp_path):
    state = trained_state(cfg)
    stream = {"epoch": np.int64(1), "order": np.arange(3), "seed": 7, "done": (1, 2)}
    d = checkpoint.save(tmp_path / "ckpt", state=state, step=12, epoch=1, cfg=cfg, rank=0,
                        stream_state=stream, mid_epoch=True)
    loaded, meta = checkpoint.load(d)  # torch.load(weights_only=True)
    assert_same(loaded, state)
    assert meta == {"step": 12, "epoch": 1, "mid_epoch": True, "config": cfg.to_dict(),
                    "clrdist_version": clrdist.__version__,
                    "state_pt": {"bytes": (d / "state.pt").stat().st_size,
                                 "crc32c": checkpoint._file_crc(d / "state.pt")[1]}}
    assert RunConfig.model_validate(meta["config"]) == cfg
    # numpy values in the stream position become plain JSON
    assert checkpoint.load_stream_state(d, 0) == {"epoch": 1, "order": [0, 1, 2], "seed": 7,
                                                  "done": [1, 2]}
    assert checkpoint.load_stream_state(d, 1) is None


def test_other_ranks_write_only_their_stream_position(cfg, tmp_path):
    d = checkpoint.save(tmp_path, state=None, step=3, epoch=0, cfg=cfg, rank=1,
                        stream_state={"pos": 5})
    assert sorted(p.name for p in d.iterdir()) == ["stream_rank1.json"]
    with pytest.raises(CheckpointError, match="not a clrdist checkpoint"):
        checkpoint.load(d)


def _rewrite_state(d, obj):
    """Replace state.pt and update meta.json's record of it (a deliberate, consistent edit)."""
    torch.save(obj, d / "state.pt")
    meta = json.loads((d / "meta.json").read_text())
    size, crc = checkpoint._file_crc(d / "state.pt")
    meta["state_pt"] = {"bytes": size, "crc32c": crc}
    (d / "meta.json").write_text(json.dumps(meta))


def test_load_refuses_pickled_objects_in_one_line(cfg, tmp_path):
    """weights_only=True: a state.pt holding anything but tensors and plain containers fails,
    and the message does not suggest retrying with weights_only=False."""
    d = checkpoint.save(tmp_path, state={"model": {}}, step=1, epoch=0, cfg=cfg, rank=0,
                        stream_state=None)
    _rewrite_state(d, {"model": {}, "hook": pytest.approx(1.0)})
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'state.pt'}: holds Python objects") and "\n" not in msg
    assert "weights_only=False" not in msg and "weights_only" not in msg.split(";")[-1]


def _saved(cfg, tmp_path, name="ckpt", step=5):
    state = {"model": build_model(cfg.model).state_dict()}
    return checkpoint.save(tmp_path / name, state=state, step=step, epoch=0, cfg=cfg, rank=0,
                           stream_state={"pos": 1})


def test_save_writes_whole_files_only(cfg, tmp_path):
    """No temporary file is left, and meta.json (written last) records state.pt's size."""
    d = _saved(cfg, tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "state.pt", "stream_rank0.json"]
    meta = json.loads((d / "meta.json").read_text())
    assert meta["state_pt"]["bytes"] == (d / "state.pt").stat().st_size > 0


def test_every_checkpoint_fault_is_one_line_naming_the_file(cfg, tmp_path):
    """Truncated state.pt (disk full while Ray copied it: was OSError EINVAL, no file named),
    flipped bytes, garbage meta.json (was JSONDecodeError), a meta.json whose config does not
    fit the weights (was a size-mismatch traceback), a garbage stream file."""
    from clrdist.train.checkpoint import load_model

    d = _saved(cfg, tmp_path, "trunc")
    raw = (d / "state.pt").read_bytes()
    (d / "state.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=rf"^{d / 'state.pt'}: \d+ bytes, meta.json records \d+ \(incomplete"):
        load_model(d)
    (d / "state.pt").write_bytes(raw[:-8] + b"\xff" * 8)
    with pytest.raises(CheckpointError, match=rf"^{d / 'state.pt'}: does not match the CRC-32C"):
        load_model(d)

    d = _saved(cfg, tmp_path, "garbage")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"^{d / 'meta.json'}: not valid JSON"):
        load_model(d)

    d = _saved(cfg, tmp_path, "misfit")
    meta = json.loads((d / "meta.json").read_text())
    meta["config"]["model"]["model_dim"] = 32
    meta["config"]["model"]["ff_dim"] = 64
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"^{d / 'state.pt'}: the weights do not fit the model config in {d / 'meta.json'}"):
        load_model(d)

    d = _saved(cfg, tmp_path, "stream")
    (d / "stream_rank0.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match=rf"^{d / 'stream_rank0.json'}: not valid JSON"):
        checkpoint.load_stream_state(d, 0)

    d = _saved(cfg, tmp_path, "notorch")
    _rewrite_state(d, {"model": {}})
    (d / "state.pt").write_bytes(b"x" * (d / "state.pt").stat().st_size)
    meta = json.loads((d / "meta.json").read_text())
    meta["state_pt"]["crc32c"] = checkpoint._file_crc(d / "state.pt")[1]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"^{d / 'state.pt'}: unreadable \(truncated or corrupt"):
        checkpoint.load(d)


def test_a_partial_copy_is_never_listed(cfg, tmp_path):
    """The disk filled while a checkpoint was copied: meta.json whole, state.pt cut. It looked
    complete and --latest picked it; now only whole checkpoints are listed."""
    _saved(cfg, tmp_path, "checkpoint_0", step=4)
    d = _saved(cfg, tmp_path, "checkpoint_1", step=8)
    (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:100])
    found, meta = checkpoint.latest_checkpoint(tmp_path)
    assert found.name == "checkpoint_0" and meta["step"] == 4


def test_latest_checkpoint_is_the_highest_complete_step(cfg, tmp_path):
    assert checkpoint.latest_checkpoint(tmp_path / "nothing") is None
    for step in (4, 10, 7):
        checkpoint.save(tmp_path / f"checkpoint_{step}", state={"model": {}}, step=step, epoch=0,
                        cfg=cfg, rank=0, stream_state=None)
    (tmp_path / "checkpoint_12").mkdir()  # being written: no state.pt / meta.json yet
    (tmp_path / "checkpoint_12" / "meta.json").write_text(json.dumps({"step": 12}))
    (tmp_path / "checkpoint_13").mkdir()
    (tmp_path / "checkpoint_13" / "state.pt").write_bytes(b"")
    (tmp_path / "checkpoint_13" / "meta.json").write_text("{trunc")  # torn write
    d, meta = checkpoint.latest_checkpoint(tmp_path)
    assert d.name == "checkpoint_10" and meta["step"] == 10


def test_training_state_adds_a_stateful_loss_and_evaluation_uses_the_losss_network(cfg):
    from clrdist.factory import build_loss

    class Engine:
        def __init__(self, model):
            self.model = model

        def state_dict(self):
            return {"model": self.model.state_dict()}

    plain_cfg = RunConfig.model_validate(TINY)
    model = build_model(plain_cfg.model)
    plain = checkpoint.training_state(Engine(model), build_loss(plain_cfg.loss))
    assert plain.keys() == {"model"}  # a stateless loss adds nothing
    evaluated = checkpoint.evaluated_model(plain, plain_cfg)
    assert not evaluated.training
    assert_same(evaluated.state_dict(), plain["model"])
    # DINO: the teacher (an EMA, here moved away from the student) is what evaluation loads
    dino_cfg = RunConfig.model_validate({**TINY, "loss": {"name": "dino"}})
    loss = build_loss(dino_cfg.loss)
    loss.attach(model, total_steps=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state = checkpoint.training_state(Engine(model), loss)
    assert {"centre", "step"} < set(state["loss"])
    teacher = checkpoint.evaluated_model(state, dino_cfg)
    assert_same(teacher.state_dict(), loss.teacher.state_dict())
    assert not torch.equal(next(teacher.parameters()), next(model.parameters()))


def test_load_model_restores_the_weights_in_eval_mode(cfg, tmp_path):
    state = trained_state(cfg)
    d = checkpoint.save(tmp_path, state=state, step=2, epoch=1, cfg=cfg, rank=0, stream_state=None)
    model, loaded_cfg = checkpoint.load_model(d)
    assert loaded_cfg == cfg and not model.training
    assert_same(model.state_dict(), state["model"])
