"""Store schema, errors and the physical sanity checks every sample passes (writer and readers)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clrdist.errors import ClrdistError

SCHEMA_VERSION = 1
KINDS = ("jet", "dijet", "event")
ARRAYS = ("particles", "mask", "label", "features")
_DTYPES = {"particles": np.float32, "mask": np.bool_, "label": np.int8, "features": np.float32}
INTEGRITY_VERSION = 2  # 2: the record also holds every array's shape
_ORDER_TAG = 0x0DE7  # mixed into the seed of sample_order
_OWNER_FILE = ".clrdist-writer.json"  # inside a temporary store: who is writing it
log = logging.getLogger("clrdist.data.store")  # one logger for the package


class StoreError(ClrdistError, ValueError):
    """A store that cannot be written or read; the message names the store path and the problem."""


def refuse_existing(path: Path, overwrite: bool) -> None:
    """StoreError when something is at the output ``path`` and ``overwrite`` is False."""
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise StoreError(f"{path}: output path already exists (overwrite=True replaces it)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def sample_order(n: int, seed: int | Sequence[int]) -> np.ndarray:
    """(n,) int64 permutation: a store written with ``shuffle_seed=seed`` holds the
    ``order[j]``-th appended sample at position j (and attached arrays likewise)."""
    seeds = [int(x) for x in np.atleast_1d(np.asarray(seed, dtype=object))]
    if any(x < 0 for x in seeds):
        raise StoreError(f"shuffle seed must be non-negative, got {seed}")
    return np.random.default_rng([_ORDER_TAG, *seeds]).permutation(int(n))


def sample_problems(data: dict[str, np.ndarray], *, particle_features: Sequence[str],
                    label_names: dict[int, str] | Sequence[int],
                    offset: int | np.ndarray = 0, limit: int = 5) -> tuple[int, list[str]]:
    """Physical sanity of a block of samples: (number of bad samples, up to ``limit`` one-line
    descriptions naming the sample's index: ``offset + row``, or ``offset[row]`` for an array).

    Checked: NaN / inf in particles or features; negative pT; padding slots (mask False) holding
    non-zero values; real particles (mask True) with pT <= 0; labels outside ``label_names``.
    pT is the particle feature named ``pt`` (no pT checks without one)."""
    particles, mask, label, features = (np.asarray(data[k]) for k in ARRAYS)
    n = len(label)
    bad = np.zeros(n, dtype=bool)
    found: list[str] = []

    def note(rows: np.ndarray, text) -> None:
        rows = np.asarray(rows, dtype=bool).reshape(n, -1).any(1)
        if rows.any():
            for r in np.flatnonzero(rows & ~bad)[: max(0, limit - len(found))]:
                at = int(offset[r]) if isinstance(offset, np.ndarray) else offset + int(r)
                found.append(f"sample {at}: {text(int(r))}")
            bad[:] |= rows

    note(~np.isfinite(particles), lambda r: "particles contain NaN or inf")
    note(~np.isfinite(features), lambda r: "features contain NaN or inf")
    pad = ~mask
    note(pad[..., None] & (particles != 0),
         lambda r: f"padding slot {int(np.flatnonzero((pad[r][:, None] & (particles[r] != 0)).any(1))[0])} "
                   "holds non-zero values (mask says padding)")
    if "pt" in particle_features:
        pt = particles[..., list(particle_features).index("pt")]
        note(pt < 0, lambda r: f"negative pT ({float(pt[r][pt[r] < 0][0]):g} GeV)")
        real_bad = mask & ~(pt > 0)
        note(real_bad, lambda r: f"real particle in slot {int(np.flatnonzero(real_bad[r])[0])} "
                                 f"has pT {float(pt[r][real_bad[r]][0]):g} <= 0")
    known = np.array(sorted(int(k) for k in label_names), dtype=np.int64)
    note(~np.isin(label.astype(np.int64), known),
         lambda r: f"label {int(label[r])} not in the declared labels {known.tolist()}")
    return int(bad.sum()), found

