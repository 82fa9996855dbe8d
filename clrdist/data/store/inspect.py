"""Checking and describing a store: verify_store, check_sample_sanity, describe."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from clrdist.data.store.base import ARRAYS, StoreError, sample_problems
from clrdist.data.store.reader import SampleStore, open_store


def verify_store(store: SampleStore | str | os.PathLike, sample: int | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Re-check the store's data files against their recorded sizes and CRC-32C.

    ``sample=None`` checks every file (also arrays attached by a split); ``sample=k`` checks k
    shard files drawn at random (seeded) from the four sample arrays, e.g. before training.
    Raises :class:`StoreError` naming the store, array and shard on the first missing, truncated
    or altered file. Returns ``{"path", "checksums" (False: the store has none, nothing was
    checked), "files_checked", "files_total", "bytes_checked"}``."""
    s = store if isinstance(store, SampleStore) else open_store(store)  # sizes checked here
    out = {"path": str(s.path), "checksums": s.integrity is not None, "files_checked": 0,
           "files_total": 0, "bytes_checked": 0}
    if s.integrity is None:
        return out
    files = [(name, key) for name, recs in s.integrity.files.items() for key in recs]
    out["files_total"] = len(files)
    if sample is not None:
        pool = [f for f in files if f[0] in ARRAYS]
        pick = np.random.default_rng([int(seed), 0x5A4D]).permutation(len(pool))[:max(0, int(sample))]
        files = [pool[i] for i in sorted(pick)]
    for name, key in files:
        s.integrity.check(name, key, force=True)
        out["bytes_checked"] += s.integrity.files[name][key][0]
    out["files_checked"] = len(files)
    return out


def check_sample_sanity(store: SampleStore | str | os.PathLike, n: int | None = 4096,
                        seed: int = 0) -> dict[str, Any]:
    """Check ``n`` random samples (all when None) with :func:`sample_problems`: finite values,
    pT >= 0, masks consistent with the particles, labels declared in ``label_names``.

    Raises :class:`StoreError` (one line: the store, how many samples are bad, the first
    problem) if any sample fails; returns ``{"path", "checked", "bad": 0}`` otherwise. Reads go
    through the verified path, so a damaged shard among the sampled ones raises too."""
    s = store if isinstance(store, SampleStore) else open_store(store)
    n_bad, checked, first = 0, 0, []
    if n is None or int(n) >= s.n:
        blocks = ((s.read_chunk(i), s.chunk_bounds(i)[0]) for i in range(s.n_chunks))
    else:
        idx = np.sort(np.random.default_rng([int(seed), 0xCA9]).choice(s.n, int(n), replace=False))
        blocks = iter([(s.take(idx), idx)])
    for d, offset in blocks:
        bad, found = sample_problems(d, particle_features=s.particle_features,
                                     label_names=s.label_names, offset=offset, limit=1)
        n_bad += bad
        checked += len(d["label"])
        first = first or found
    if n_bad:
        raise StoreError(f"{s.path}: {n_bad} of {checked} checked samples fail the sanity checks; "
                         f"first: {first[0]}")
    return {"path": str(s.path), "checked": checked, "bad": 0}


def describe(store: SampleStore | str | os.PathLike) -> dict[str, Any]:
    """Summary of a store for ``clrdist data info`` (reads it chunk by chunk, bounded memory):
    samples, label counts, multiplicity stats, feature ranges, chunk and shard shapes, bytes on
    disk and compression ratio, attributes; ``problems``: samples failing
    :func:`sample_problems` (count and the first few); ``integrity``: whether shard checksums
    are recorded (every shard read here is checked against them); ``order``: the provenance's
    order record (None: the writer recorded no random order, it may be sorted by class)."""
    s = store if isinstance(store, SampleStore) else open_store(store)
    n_bad, examples = 0, []
    labels: dict[int, int] = {}
    mult_hist = np.zeros(s.n_particles + 1, dtype=np.int64)
    k = s.n_features
    fmin, fmax = np.full(k, np.inf), np.full(k, -np.inf)
    fsum = np.zeros(k)
    for i in range(s.n_chunks):
        d = s.read_chunk(i)
        bad, found = sample_problems(d, particle_features=s.particle_features,
                                     label_names=s.label_names, offset=s.chunk_bounds(i)[0],
                                     limit=5 - len(examples))
        n_bad, examples = n_bad + bad, examples + found
        vals, counts = np.unique(d["label"], return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist(), strict=True):
            labels[v] = labels.get(v, 0) + c
        mult_hist += np.bincount(d["mask"].sum(1), minlength=s.n_particles + 1)
        f = d["features"].astype(np.float64)
        fmin, fmax = np.minimum(fmin, f.min(0)), np.maximum(fmax, f.max(0))
        fsum += f.sum(0)
    mult = np.arange(s.n_particles + 1)
    cdf = np.cumsum(mult_hist) / max(1, s.n)
    raw = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in s.arrays.values())
    on_disk = s.nbytes_stored()
    names = s.label_names
    return {
        "path": str(s.path),
        "samples": s.n,
        "kind": s.kind,
        "n_particles": s.n_particles,
        "particle_features": s.particle_features,
        "labels": {names.get(v, str(v)) + f" ({v})": c for v, c in sorted(labels.items())},
        "multiplicity": {
            "mean": float((mult * mult_hist).sum() / max(1, s.n)),
            "min": int(mult[mult_hist > 0].min()), "max": int(mult[mult_hist > 0].max()),
            "p10": int(np.searchsorted(cdf, 0.1)), "median": int(np.searchsorted(cdf, 0.5)),
            "p90": int(np.searchsorted(cdf, 0.9)),
        },
        "features": {name: {"min": float(fmin[j]), "max": float(fmax[j]),
                            "mean": float(fsum[j] / max(1, s.n))}
                     for j, name in enumerate(s.feature_names)},
        "chunk_shape": {k2: list(a.chunks) for k2, a in s.arrays.items()},
        "shard_shape": {k2: list(a.shards or a.chunks) for k2, a in s.arrays.items()},
        "n_chunks": s.n_chunks,
        "bytes_uncompressed": raw,
        "bytes_on_disk": on_disk,
        "compression_ratio": raw / on_disk if on_disk else None,
        "schema_version": s.attrs["schema_version"],
        "provenance": s.attrs.get("provenance", {}),
        "problems": {"samples": n_bad, "examples": examples},
        "integrity": ({"algorithm": "crc32c", "files": sum(map(len, s.integrity.files.values()))}
                      if s.integrity is not None else None),
        "order": s.attrs.get("provenance", {}).get("order"),
    }
