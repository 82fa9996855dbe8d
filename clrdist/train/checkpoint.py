"""Checkpoints: what a run needs to resume exactly, and the trained model evaluation loads.

A checkpoint is a directory:

    state.pt            model / optimiser / scheduler tensors (loaded with weights_only=True)
    meta.json           step, epoch, the resolved run config, clrdist version, and the size and
                        CRC-32C of state.pt (written last: a checkpoint without it is incomplete)
    stream_rank{r}.json each rank's stream position (Ray Train merges the workers' directories)

Every file is written under a temporary name, fsynced and renamed; Ray Train then copies the
directory into ``checkpoint.storage_path``, and a copy cut short (disk full, a killed node) is
told apart by meta.json's record of state.pt: :func:`latest_checkpoint` never lists it and
:func:`load` refuses it. Every fault of a checkpoint is a one-line :class:`CheckpointError`
naming the file.

Nothing here imports Ray, so ``clrdist eval`` and notebooks can load checkpoints directly;
``clrdist.factory.build_encoder(model, cfg)`` turns the loaded model into an encoder of store
samples.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import torch

import clrdist
from clrdist.config import RunConfig, config_from_dict
from clrdist.errors import ClrdistError, first_line
from clrdist.factory import build_loss, build_model


class CheckpointError(ClrdistError):
    """A checkpoint that is missing, incomplete or unreadable; the message names the file."""


def _atomic_write(path: Path, write) -> None:
    """``write(file object)`` into ``path`` under a temporary name, fsynced, then renamed: a
    reader sees the whole file or none."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _file_crc(path: Path) -> tuple[int, int]:
    """(size, CRC-32C) of a file."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = google_crc32c.extend(crc, block)
            size += len(block)
    return size, crc


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def save(directory: str | Path, *, state: dict[str, Any] | None, step: int, epoch: int,
         cfg: RunConfig, rank: int, stream_state: dict[str, Any] | None,
         mid_epoch: bool = False, rank_state: dict[str, Any] | None = None) -> Path:
    """Write this rank's part of a checkpoint (rank 0 writes the model state and meta; every
    rank its stream position and ``rank_state``, e.g. a ZeRO optimiser shard)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if stream_state is not None:
        text = json.dumps(_jsonable(stream_state)).encode()
        _atomic_write(d / f"stream_rank{rank}.json", lambda f: f.write(text))
    if rank_state is not None:
        _atomic_write(d / f"state_rank{rank}.pt", lambda f: torch.save(rank_state, f))
    if state is not None:
        _atomic_write(d / "state.pt", lambda f: torch.save(state, f))
        size, crc = _file_crc(d / "state.pt")
        meta = {"step": step, "epoch": epoch, "mid_epoch": mid_epoch, "config": cfg.to_dict(),
                "clrdist_version": clrdist.__version__,
                "state_pt": {"bytes": size, "crc32c": crc}}  # last: marks the checkpoint whole
        text = json.dumps(meta, indent=1).encode()
        _atomic_write(d / "meta.json", lambda f: f.write(text))
    return d


def _torch_load(p: Path) -> dict[str, Any]:
    """torch.load(weights_only=True), every failure one line naming the file."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # not a pickle of objects: garbage bytes
            raise CheckpointError(f"{p}: unreadable (truncated or corrupt: not a tensor file)") from None
        # torch's message suggests weights_only=False, i.e. running the file's code: never
        raise CheckpointError(f"{p}: holds Python objects besides tensors, which a clrdist "
                              "checkpoint never does; refusing to load it") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{p}: unreadable (truncated or corrupt: {first_line(e)})") from None


def _read_json(p: Path) -> dict[str, Any]:
    try:
        obj = json.loads(p.read_text())
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({first_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a JSON object")
    return obj


def load_rank_state(directory: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's own part of a checkpoint (``save(rank_state=...)``), or None."""
    p = Path(directory) / f"state_rank{rank}.pt"
    return _torch_load(p) if p.is_file() else None


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a complete checkpoint: state.pt there with the recorded size (checkpoints
    written before the record: state.pt there). One-line CheckpointError otherwise."""
    d = Path(directory)
    if not (d / "meta.json").is_file():
        raise CheckpointError(f"{d}: not a clrdist checkpoint (no meta.json: incomplete or not "
                              "a checkpoint)")
    meta = _read_json(d / "meta.json")
    for key in ("step", "config"):
        if key not in meta:
            raise CheckpointError(f"{d / 'meta.json'}: no {key!r} entry")
    rec, f = meta.get("state_pt"), d / "state.pt"
    try:
        size = f.stat().st_size
    except OSError:
        raise CheckpointError(f"{f}: missing (incomplete checkpoint)") from None
    if isinstance(rec, dict) and size != rec.get("bytes"):
        raise CheckpointError(f"{f}: {size} bytes, meta.json records {rec.get('bytes')} "
                              "(incomplete checkpoint: written or copied only in part)")
    return meta


def load(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensor state, meta) of a checkpoint directory, state.pt checked against meta.json's
    record (size and CRC-32C)."""
    d = Path(directory)
    meta = read_meta(d)
    rec = meta.get("state_pt")
    if isinstance(rec, dict) and _file_crc(d / "state.pt")[1] != rec.get("crc32c"):
        raise CheckpointError(f"{d / 'state.pt'}: does not match the CRC-32C in meta.json "
                              "(altered or corrupt)")
    return _torch_load(d / "state.pt"), meta


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(directory, meta) of the checkpoint with the highest step under a Ray Train run directory
    (``checkpoint.storage_path``/NAME, the run's ``clrdist.ray_run_dir`` tag), or None. Only
    complete ones count (state.pt and meta.json written); for runs that did not finish."""
    best = None
    root = Path(run_dir)
    for d in (root.iterdir() if root.is_dir() else ()):
        if not d.is_dir():
            continue
        try:
            meta = read_meta(d)
            key = (int(meta["step"]), d.stat().st_mtime)
        except (CheckpointError, OSError, TypeError, ValueError):
            continue  # incomplete (a copy cut short), garbage, or not a checkpoint
        if best is None or key > best[0]:
            best = (key, d, meta)
    return None if best is None else (best[1], best[2])


def load_stream_state(directory: str | Path, rank: int) -> dict[str, Any] | None:
    p = Path(directory) / f"stream_rank{rank}.json"
    return _read_json(p) if p.is_file() else None


def training_state(engine: Any, loss_fn: torch.nn.Module) -> dict[str, Any]:
    """The engine's state, plus ``"loss"``: the state of a loss that has one (DINO's teacher,
    centre and step; ORCA's uncertainty and step)."""
    state = engine.state_dict()
    loss_state = loss_fn.state_dict()
    if loss_state:
        state["loss"] = loss_state
    return state


def evaluated_model(state: dict[str, Any], cfg: RunConfig) -> torch.nn.Module:
    """The network evaluation uses, in eval mode: the run's loss picks it from the checkpoint's
    model and loss state (``Loss.eval_model``: DINO's teacher, else the trained model)."""
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    loss = build_loss(cfg.loss)
    loss.attach(model, total_steps=1)
    if "loss" in state:
        loss.load_state_dict(state["loss"])
    return loss.eval_model(model).eval()


def load_model(directory: str | Path) -> tuple[torch.nn.Module, RunConfig]:
    """The trained model (eval mode, CPU; DINO: the teacher) and the config it was trained with."""
    state, meta = load(directory)
    source = Path(directory) / "meta.json"
    cfg = config_from_dict(meta["config"], source=str(source), stored=True)
    try:
        return evaluated_model(state, cfg), cfg
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        # size mismatch, missing keys: the config does not describe these weights
        raise CheckpointError(f"{Path(directory) / 'state.pt'}: the weights do not fit the "
                              f"model config in {source} ({first_line(e)[:200]})") from None
