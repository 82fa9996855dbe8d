"""Checkpoints: what a run needs to resume exactly, and the trained model evaluation loads.

A checkpoint is a directory:

    state.pt            model / optimiser / scheduler tensors (loaded with weights_only=True)
    meta.json           step, epoch, the resolved run config, clrdist version
    stream_rank{r}.json each rank's stream position (Ray Train merges the workers' directories)

Nothing here imports Ray, so ``clrdist eval`` and notebooks can load checkpoints directly;
``clrdist.models.encode.make_encoder`` turns the loaded model into an encoder of store samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clrdist
from clrdist.config import RunConfig, config_from_dict
from clrdist.errors import ClrdistError


class CheckpointError(ClrdistError):
    """A checkpoint directory that is missing or incomplete."""


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
    if state is not None:
        torch.save(state, d / "state.pt")
        meta = {"step": step, "epoch": epoch, "mid_epoch": mid_epoch, "config": cfg.to_dict(),
                "clrdist_version": clrdist.__version__}
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
    if stream_state is not None:
        (d / f"stream_rank{rank}.json").write_text(json.dumps(_jsonable(stream_state)))
    if rank_state is not None:
        torch.save(rank_state, d / f"state_rank{rank}.pt")
    return d


def load_rank_state(directory: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's own part of a checkpoint (``save(rank_state=...)``), or None."""
    p = Path(directory) / f"state_rank{rank}.pt"
    return torch.load(p, map_location="cpu", weights_only=True) if p.is_file() else None


def load(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensor state, meta) of a checkpoint directory."""
    d = Path(directory)
    if not (d / "state.pt").is_file() or not (d / "meta.json").is_file():
        raise CheckpointError(f"{d}: not a clrdist checkpoint (state.pt and meta.json expected)")
    state = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
    meta = json.loads((d / "meta.json").read_text())
    return state, meta


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(directory, meta) of the checkpoint with the highest step under a Ray Train run directory
    (``checkpoint.storage_path``/NAME, the run's ``clrdist.ray_run_dir`` tag), or None. Only
    complete ones count (state.pt and meta.json written); for runs that did not finish."""
    best = None
    root = Path(run_dir)
    for d in (root.iterdir() if root.is_dir() else ()):
        if (d / "state.pt").is_file() and (d / "meta.json").is_file():
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            key = (int(meta.get("step", -1)), d.stat().st_mtime)
            if best is None or key > best[0]:
                best = (key, d, meta)
    return None if best is None else (best[1], best[2])


def load_stream_state(directory: str | Path, rank: int) -> dict[str, Any] | None:
    p = Path(directory) / f"stream_rank{rank}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def training_state(engine: Any, loss_fn: torch.nn.Module) -> dict[str, Any]:
    """The engine's state, plus ``"loss"``: the state of a loss that has one (DINO's teacher,
    centre and step; ORCA's uncertainty and step)."""
    state = engine.state_dict()
    loss_state = loss_fn.state_dict()
    if loss_state:
        state["loss"] = loss_state
    return state


def evaluated_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights evaluation uses: DINO's teacher when the checkpoint has one, else the model."""
    teacher = {k.removeprefix("teacher."): v for k, v in state.get("loss", {}).items()
               if k.startswith("teacher.")}
    return teacher or state["model"]


def load_model(directory: str | Path) -> tuple[torch.nn.Module, RunConfig]:
    """The trained model (eval mode, CPU; DINO: the teacher) and the config it was trained with."""
    from clrdist.models import build_model

    state, meta = load(directory)
    cfg = config_from_dict(meta["config"], source=f"{directory}/meta.json")
    model = build_model(cfg.model)
    model.load_state_dict(evaluated_weights(state))
    model.eval()
    return model, cfg
