"""Reading a store: open_store validates it, SampleStore reads it (verified against its record)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import zarr

from clrdist.data.store.base import _DTYPES, ARRAYS, KINDS, SCHEMA_VERSION, StoreError, log
from clrdist.data.store.integrity import (
    NO_CHECKSUMS,
    _Integrity,
    _shard_key,
    unverified_allowed,
)
from clrdist.data.store.shards import _ShardReader
from clrdist.errors import first_line


class SampleStore:
    """A validated, read-only view of a store (use :func:`open_store`)."""

    def __init__(self, path: Path, group: zarr.Group, arrays: dict[str, zarr.Array], attrs: dict,
                 integrity: _Integrity | None = None):
        self.path = path
        self._group = group
        self.arrays = arrays
        self.attrs = attrs
        p = arrays["particles"]
        self.n = int(p.shape[0])
        self.n_particles = int(p.shape[1])
        self.n_features = int(arrays["features"].shape[1])
        self.chunk_size = int(p.chunks[0])
        self.shard_size = int(p.shards[0]) if p.shards is not None else self.chunk_size
        self.n_chunks = -(-self.n // self.chunk_size)
        # integrity: None for a store without a record, opened with --allow-unverified
        self.integrity = integrity
        if self.integrity is not None:
            self.integrity.check_sizes({k: (a.ndim, -(-a.shape[0] // self._outer(k)))
                                        for k, a in arrays.items()})
        self._fast = _ShardReader(path, ARRAYS, self.integrity)

    def _outer(self, name: str) -> int:
        """Samples per file of array ``name`` (its shard length, or chunk length unsharded)."""
        a = self.arrays[name]
        return int(a.shards[0]) if a.shards is not None else int(a.chunks[0])

    def _check_rows(self, start: int, stop: int) -> None:
        """CRC-check the files holding samples [start, stop) of every array (once each)."""
        if self.integrity is None or stop <= start:
            return
        for name, a in self.arrays.items():
            per = self._outer(name)
            for k in range(start // per, (stop - 1) // per + 1):
                self.integrity.check(name, _shard_key(a.ndim, k))

    @property
    def kind(self) -> str:
        return self.attrs["kind"]

    @property
    def particle_features(self) -> list[str]:
        return list(self.attrs["particle_features"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.attrs["feature_names"])

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.attrs["label_names"].items()}

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"{self.path}: chunk {i} out of range [0, {self.n_chunks})")
        return i * self.chunk_size, min((i + 1) * self.chunk_size, self.n)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples [start, stop) as numpy arrays (keys particles, mask, label, features)."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        if stop <= start:
            return {k: np.empty((0, *a.shape[1:]), dtype=a.dtype) for k, a in self.arrays.items()}
        self._check_rows(start, stop)
        return {k: np.asarray(a[start:stop]) for k, a in self.arrays.items()}

    def read_chunk(self, i: int) -> dict[str, np.ndarray]:
        """Chunk ``i`` (every array), decoded straight from its shard when the layout allows."""
        a, b = self.chunk_bounds(i)
        if self._fast.ok:
            return self._fast.read_chunk(i)
        return self.read(a, b)

    def compressed_chunk(self, i: int) -> dict[str, bytes] | None:
        """Chunk ``i`` of every array as stored (Blosc-compressed bytes, not decoded), or None
        when the store is not in the sharded layout (benchmarks of the codec)."""
        self.chunk_bounds(i)
        if not self._fast.ok:
            return None
        return {k: self._fast.compressed(k, i) for k in self._fast.meta}

    def read_chunk_into(self, i: int, dest: dict[str, np.ndarray]) -> int:
        """Decode chunk ``i`` into ``dest`` (arrays of the full chunk shape); returns its rows."""
        a, b = self.chunk_bounds(i)
        if self._fast.ok:
            self._fast.decode_into(i, dest)
        else:
            for k, v in self.read(a, b).items():
                dest[k][: b - a] = v
        return b - a

    def read_all(self, max_samples: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Every sample, or a random subset of ``max_samples`` (seeded by ``seed``, in storage
        order): a capped read has the store's class mix whatever order the store is in."""
        if max_samples is None or int(max_samples) >= self.n:
            return self.read(0, self.n)
        m = max(0, int(max_samples))
        rng = np.random.default_rng([int(seed), 0xCA9])
        return self.take(np.sort(rng.choice(self.n, m, replace=False)))

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Samples at the ascending storage indices ``idx``, read chunk by chunk."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx[0] < 0 or idx[-1] >= self.n or (np.diff(idx) <= 0).any()):
            raise IndexError(f"{self.path}: take() needs unique ascending indices in [0, {self.n})")
        out = {k: np.empty((len(idx), *a.shape[1:]), dtype=a.dtype) for k, a in self.arrays.items()}
        chunk = idx // self.chunk_size
        edges = np.flatnonzero(np.diff(chunk)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(idx)], strict=True):
            if hi <= lo:
                continue
            c = int(chunk[lo])
            d = self.read_chunk(c)
            rows = idx[lo:hi] - c * self.chunk_size
            for k in out:
                out[k][lo:hi] = d[k][rows]
        return out

    def nbytes_stored(self) -> int:
        """Bytes on disk under the store directory."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def content_hash(self) -> str:
        """sha256 over the store's metadata and shard files (identifies a parent of a split)."""
        h = hashlib.sha256()
        for f in sorted(p for p in self.path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(self.path)).encode())
            if f.name == "zarr.json" and f.parent == self.path:
                # group attributes may be annotated later (e.g. by split); hash the data only
                continue
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"SampleStore({str(self.path)!r}, n={self.n}, kind={self.attrs.get('kind')!r}, "
                f"n_particles={self.n_particles}, chunk_size={self.chunk_size})")


def open_store(path: str | os.PathLike, *, allow_unverified: bool | None = None) -> SampleStore:
    """Open and validate a store; any problem raises :class:`StoreError` naming the path.

    The group attributes are checked (types included) and every array's shape against the
    integrity record. A store without a record (or with a version-1 record, which does not cover
    array lengths) is refused unless ``allow_unverified`` (default: ``clrdist
    --allow-unverified``, i.e. CLRDIST_ALLOW_UNVERIFIED=1); then it opens with a warning."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not path.is_dir() or not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a clrdist store (no Zarr v3 group metadata)")
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a clrdist store (unreadable zarr.json: {e})") from None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise StoreError(f"{path}: not a clrdist store (not a Zarr v3 group)")
    attrs = meta.get("attributes") or {}
    if "schema_version" not in attrs:
        raise StoreError(f"{path}: not a clrdist store (no schema_version attribute)")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {attrs['schema_version']!r} is not supported "
                         f"(this clrdist reads version {SCHEMA_VERSION})")
    check_attrs(path, attrs)
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    except Exception as e:  # zarr raises several types for a corrupt group
        raise StoreError(f"{path}: cannot open Zarr group: {e}") from None
    arrays = {}
    for name in ARRAYS:
        try:
            arr = group[name]
        except KeyError:
            raise StoreError(f"{path}: missing array {name!r}") from None
        except Exception as e:  # corrupt array metadata: JSONDecodeError, ValueError, ...
            raise StoreError(f"{path}: array {name!r}: unreadable metadata {path / name / 'zarr.json'} "
                             f"({type(e).__name__}: {first_line(e)})") from None
        if not isinstance(arr, zarr.Array):
            raise StoreError(f"{path}: {name!r} is not an array")
        if np.dtype(arr.dtype) != np.dtype(_DTYPES[name]):
            raise StoreError(f"{path}: array {name!r} has dtype {arr.dtype}, expected "
                             f"{np.dtype(_DTYPES[name])}")
        arrays[name] = arr
    p, m, lab, f = (arrays[k] for k in ARRAYS)
    ndims = {"particles": 3, "mask": 2, "label": 1, "features": 2}
    for name, nd in ndims.items():
        if arrays[name].ndim != nd:
            raise StoreError(f"{path}: array {name!r} has {arrays[name].ndim} dimensions, expected {nd}")
    n = p.shape[0]
    if n == 0:
        raise StoreError(f"{path}: array 'particles' has no samples (shape[0] is 0)")
    for name in ARRAYS:
        if arrays[name].shape[0] != n:
            raise StoreError(f"{path}: arrays disagree on the number of samples "
                             f"(particles {n}, {name} {arrays[name].shape[0]})")
    if m.shape[1] != p.shape[1]:
        raise StoreError(f"{path}: mask has {m.shape[1]} particle slots, particles {p.shape[1]}")
    if p.shape[2] != len(attrs["particle_features"]):
        raise StoreError(f"{path}: particles have {p.shape[2]} features per particle but "
                         f"particle_features names {len(attrs['particle_features'])}")
    if f.shape[1] != len(attrs["feature_names"]):
        raise StoreError(f"{path}: features have {f.shape[1]} columns but feature_names "
                         f"names {len(attrs['feature_names'])}")
    chunk = {arrays[k].chunks[0] for k in ARRAYS}
    if len(chunk) != 1:
        raise StoreError(f"{path}: arrays use different chunk lengths along the sample axis: {sorted(chunk)}")
    integrity = _open_integrity(path, group, arrays, attrs, allow_unverified)
    return SampleStore(path, group, arrays, dict(attrs), integrity)


_WARNED_UNVERIFIED: set[str] = set()


def _open_integrity(path: Path, group, arrays: dict, attrs: dict,
                    allow_unverified: bool | None) -> _Integrity | None:
    """The store's integrity record, every array's shape checked against it; None (with a
    warning) for a store without a usable record that the user accepted."""
    integrity = _Integrity(path, attrs["integrity"]) if "integrity" in attrs else None
    if integrity is None or integrity.shapes is None:
        allowed = unverified_allowed() if allow_unverified is None else allow_unverified
        if not allowed:
            what = "no integrity record" if integrity is None else "a version-1 integrity record"
            raise StoreError(f"{path}: {what} (array lengths not covered): a resized or altered "
                             "array cannot be detected; read it anyway with clrdist "
                             "--allow-unverified, or rewrite it with clrdist --allow-unverified "
                             "data split STORE --fractions 1 --names all")
        if str(path.resolve()) not in _WARNED_UNVERIFIED:
            _WARNED_UNVERIFIED.add(str(path.resolve()))
            log.warning("%s: %s", path, NO_CHECKSUMS)
        return None
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    for name in integrity.files:
        if name not in shapes:
            try:
                shapes[name] = tuple(group[name].shape)
            except Exception as e:  # noqa: BLE001 - missing or corrupt metadata of an extra array
                raise StoreError(f"{path}: array {name!r} of the integrity record cannot be "
                                 f"opened ({type(e).__name__}: {first_line(e)})") from None
    integrity.check_shapes(shapes)
    return integrity


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def check_attrs(path: Path, attrs: dict) -> None:
    """The group attributes a reader relies on exist with the right types (one line naming the
    store and the attribute otherwise)."""
    for key in ("kind", "particle_features", "feature_names", "label_names", "provenance"):
        if key not in attrs:
            raise StoreError(f"{path}: missing group attribute {key!r}")
    if attrs["kind"] not in KINDS:
        raise StoreError(f"{path}: attribute 'kind': {attrs['kind']!r} is not one of {', '.join(KINDS)}")
    for key in ("particle_features", "feature_names"):
        if not _is_str_list(attrs[key]):
            raise StoreError(f"{path}: attribute {key!r}: expected a list of names, got "
                             f"{type(attrs[key]).__name__} {str(attrs[key])[:60]}")
    names = attrs["label_names"]
    if not isinstance(names, dict) or not names:
        raise StoreError(f"{path}: attribute 'label_names': expected a mapping label -> name")
    for k, v in names.items():
        try:
            ok = str(int(k)) == str(k).strip() and -128 <= int(k) <= 127 and isinstance(v, str)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise StoreError(f"{path}: attribute 'label_names': entry {k!r}: {v!r} is not "
                             "integer label (-128..127) -> name")
    if not isinstance(attrs["provenance"], dict):
        raise StoreError(f"{path}: attribute 'provenance': expected a mapping")
