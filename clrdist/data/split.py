"""Disjoint random splits of a store (train / val / test), provably disjoint.

Every child store carries, next to the usual arrays, an int64 array ``source_index`` (n,) with
the parent index of each of its samples, and in its provenance a ``split`` record: the parent's
path and content hash (:meth:`SampleStore.content_hash`), the split name, seed, fractions and
the sha256 of the index array. :func:`check_disjoint` proves that stores were cut from the same
parent and share no sample.

Children are written in random order (``sample_order`` seeded by ``[seed, split number]``,
recorded in ``provenance.order``), whatever the parent's order: a class-sorted parent gives
children whose batches have the class mix of the whole. The parent's shards are checked against
their checksums before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import zarr

from clrdist.data.store import (
    ARRAYS,
    NO_CHECKSUMS,
    SampleStore,
    StoreError,
    StoreWriter,
    log,
    open_store,
    refuse_existing,
    sample_order,
    verify_store,
)
from clrdist.errors import is_plain_name

INDEX_ARRAY = "source_index"


def _index_sha256(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()


def split_assignment(n: int, fractions: list[float], seed: int) -> np.ndarray:
    """(n,) int8: the split each sample goes to (-1 for none when fractions sum below 1).

    Split sizes are ``floor(f * n)``, with the rounding remainder going to the first split
    when the fractions sum to 1."""
    fr = np.asarray(fractions, dtype=float)
    if len(fr) == 0 or not np.isfinite(fr).all() or (fr <= 0).any() or fr.sum() > 1 + 1e-9:
        raise StoreError(f"split fractions must be positive and sum to at most 1, got {fractions}")
    counts = np.floor(fr * n).astype(np.int64)
    if abs(fr.sum() - 1) < 1e-9:
        counts[0] += n - counts.sum()
    if (counts == 0).any():
        raise StoreError(f"split fractions {fractions} leave an empty split of {n} samples")
    perm = np.random.default_rng([int(seed), 0x5D17]).permutation(n)
    which = np.full(n, -1, dtype=np.int8)
    edges = np.concatenate([[0], np.cumsum(counts)])
    for i in range(len(counts)):
        which[perm[edges[i]:edges[i + 1]]] = i
    return which


def split_store(path: str | os.PathLike, fractions: dict[str, float], *,
                out_dir: str | os.PathLike | None = None, prefix: str = "", seed: int = 0,
                overwrite: bool = False) -> dict[str, Path]:
    """Split ``path`` into disjoint stores ``out_dir/<prefix><name>.zarr``.

    Reads the parent chunk by chunk (bounded memory). Returns {name: path}.
    """
    for name in fractions:
        if not is_plain_name(f"{prefix}{name}"):
            raise StoreError(f"split name {prefix + name!r}: not a plain name (letters, digits, "
                             "_ . + -; no / or ..): the split store must stay in the output folder")
    split_assignment(1 << 20, list(fractions.values()), seed)  # bad fractions: before any reading
    parent = open_store(path)
    if not verify_store(parent)["checksums"]:  # a damaged parent fails before any writing
        log.warning("%s: %s", parent.path, NO_CHECKSUMS)
    out_dir = Path(out_dir) if out_dir is not None else parent.path.parent
    names = list(fractions)
    which = split_assignment(parent.n, [fractions[k] for k in names], seed)
    parent_hash = parent.content_hash()
    outs = {name: out_dir / f"{prefix}{name}.zarr" for name in names}
    for name, out in outs.items():
        if out.resolve() == parent.path.resolve():
            raise StoreError(f"{out}: split {name!r} would overwrite its parent store")
        refuse_existing(out, overwrite)
    writers: dict[str, StoreWriter] = {}
    closed: list[Path] = []
    try:
        for i, name in enumerate(names):
            idx = np.flatnonzero(which == i)
            order_seed = [int(seed), i]
            record = {
                "parent": str(parent.path.resolve()),
                "parent_content_sha256": parent_hash,
                "parent_n": parent.n,
                "name": name,
                "seed": int(seed),
                "fractions": {k: float(v) for k, v in fractions.items()},
                "index_array": INDEX_ARRAY,
                "index_sha256": _index_sha256(idx[sample_order(len(idx), order_seed)]),
                "n": int(len(idx)),
            }
            writers[name] = StoreWriter(
                outs[name], kind=parent.kind, particle_features=parent.particle_features,
                feature_names=parent.feature_names, label_names=parent.label_names,
                n_particles=parent.n_particles, chunk_size=parent.chunk_size,
                shard_chunks=max(1, parent.shard_size // parent.chunk_size),
                provenance={k: v for k, v in parent.attrs.get("provenance", {}).items()
                            if k != "order"} | {"split": record},
                overwrite=overwrite, shuffle_seed=order_seed)
            # the index array lives inside the child store, in the child's order
            writers[name].attach(INDEX_ARRAY, idx.astype(np.int64))
        for c in range(parent.n_chunks):
            a, b = parent.chunk_bounds(c)
            data = parent.read_chunk(c)
            w = which[a:b]
            for i, name in enumerate(names):
                sel = w == i
                if sel.any():
                    writers[name].append(*(data[k][sel] for k in ARRAYS))
        for name, w in writers.items():
            w.close()
            closed.append(outs[name])
    except BaseException:
        for w in writers.values():
            w.abort()
        for out in closed:  # all splits or none: no half-made set
            shutil.rmtree(out, ignore_errors=True)
        raise
    return outs


def source_index(store: SampleStore | str | os.PathLike) -> np.ndarray:
    """The parent index of each of a split store's samples (in the store's order), verified
    against its recorded hash."""
    s = store if isinstance(store, SampleStore) else open_store(store)
    rec = s.attrs.get("provenance", {}).get("split")
    if rec is None:
        raise StoreError(f"{s.path}: not a split store (no provenance.split record)")
    try:
        idx = np.asarray(zarr.open_group(str(s.path), mode="r")[rec["index_array"]][:])
    except KeyError:
        raise StoreError(f"{s.path}: split index array {rec['index_array']!r} is missing") from None
    if len(idx) != s.n or _index_sha256(idx) != rec["index_sha256"]:
        raise StoreError(f"{s.path}: split index array does not match its recorded sha256")
    return idx


def check_disjoint(*stores: SampleStore | str | os.PathLike) -> None:
    """Raise StoreError unless the stores are splits of one parent with no common sample."""
    opened = [s if isinstance(s, SampleStore) else open_store(s) for s in stores]
    recs = [s.attrs.get("provenance", {}).get("split") for s in opened]
    for s, r in zip(opened, recs, strict=True):
        if r is None:
            raise StoreError(f"{s.path}: not a split store (no provenance.split record)")
    parents = {r["parent_content_sha256"] for r in recs}
    if len(parents) != 1:
        raise StoreError("stores come from different parents: "
                         + ", ".join(f"{s.path} <- {r['parent']}" for s, r in zip(opened, recs, strict=True)))
    seen = np.zeros(recs[0]["parent_n"], dtype=bool)
    for s in opened:
        idx = source_index(s)
        if seen[idx].any():
            raise StoreError(f"{s.path}: shares {int(seen[idx].sum())} samples with another split")
        seen[idx] = True
