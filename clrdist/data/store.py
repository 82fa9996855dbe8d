"""The Zarr v3 sample store: schema, writer, reader, validation.

One Zarr v3 group per dataset::

    particles  float32 (N, P, F)   constituents / objects, padded, e.g. (pT [GeV], eta, phi)
    mask       bool    (N, P)      real particle (True) or padding
    label      int8    (N,)        -1 unknown, 0 background, 1.. signal or process id
    features   float32 (N, K)      sample-level quantities (jet pT, eta, phi, mass, ...)

Every array is chunked along the sample axis with the same chunk length and stored through
Zarr's sharding codec (``shard_chunks`` chunks per shard file: HPC file systems hate millions of
small files), compressed with Blosc/Zstd level 3 and byte shuffle. Group attributes carry the
schema version, kind, particle feature names, feature names, label names and provenance.

A store is written under ``<out>.tmp-<uuid>`` next to the output and renamed when complete, so a
crash never leaves a half store that looks valid; readers validate the schema and fail with a
:class:`StoreError` that names the store and the problem.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

import clrdist
from clrdist.errors import ClrdistError

SCHEMA_VERSION = 1
KINDS = ("jet", "dijet", "event")
ARRAYS = ("particles", "mask", "label", "features")
_DTYPES = {"particles": np.float32, "mask": np.bool_, "label": np.int8, "features": np.float32}


class StoreError(ClrdistError, ValueError):
    """A store that cannot be written or read; the message names the store path and the problem."""


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise StoreError(f"{path}: output path already exists (pass overwrite / --overwrite to replace it)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class StoreWriter:
    """Append samples to a new store; a context manager that commits on a clean exit.

    Appends are buffered and written a whole shard at a time (``chunk_size * shard_chunks``
    samples), so many small appends cost one resize and one write per shard.

        with StoreWriter(out, kind="jet", particle_features=["pt", "eta", "phi"], ...) as w:
            w.append(particles, mask, label, features)

    On an exception inside the ``with`` block the temporary directory is removed and nothing
    appears at ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        particle_features: list[str],
        feature_names: list[str],
        label_names: dict[int, str],
        n_particles: int,
        chunk_size: int = 4096,
        shard_chunks: int = 16,
        provenance: dict | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if kind not in KINDS:
            raise StoreError(f"{self.path}: unknown store kind {kind!r} (known: {', '.join(KINDS)})")
        if n_particles <= 0 or chunk_size <= 0 or shard_chunks <= 0:
            raise StoreError(f"{self.path}: n_particles, chunk_size and shard_chunks must be positive")
        if not particle_features or not feature_names:
            raise StoreError(f"{self.path}: particle_features and feature_names must not be empty")
        _refuse_existing(self.path, overwrite)
        self.overwrite = overwrite
        self.kind = kind
        self.particle_features = list(particle_features)
        self.feature_names = list(feature_names)
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        self.n_particles = int(n_particles)
        self.chunk_size = int(chunk_size)
        self.shard_chunks = int(shard_chunks)
        self.provenance = dict(provenance or {})
        self.n = 0
        self._closed = False
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self._buffered = 0
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:12]}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=3)
            nf, nk, p = len(self.particle_features), len(self.feature_names), self.n_particles
            shapes = {"particles": (0, p, nf), "mask": (0, p), "label": (0,), "features": (0, nk)}
            self._arrays = {}
            for name, shape in shapes.items():
                chunks = (self.chunk_size, *shape[1:])
                shards = (self.chunk_size * self.shard_chunks, *shape[1:])
                self._arrays[name] = self._group.create_array(
                    name, shape=shape, dtype=_DTYPES[name], chunks=chunks, shards=shards,
                    compressors=_compressor(), fill_value=0,
                )
        except Exception:
            _remove(self.tmp_path)
            raise

    # -- appending -------------------------------------------------------------------------
    def append(self, particles: np.ndarray, mask: np.ndarray, label: np.ndarray,
               features: np.ndarray) -> None:
        """Append n samples: particles (n, P, F) float32, mask (n, P) bool, label (n,) int8,
        features (n, K) float32. Values must be finite and labels in ``label_names``."""
        if self._closed:
            raise StoreError(f"{self.path}: append after close")
        data = {"particles": np.asarray(particles), "mask": np.asarray(mask),
                "label": np.asarray(label), "features": np.asarray(features)}
        n = data["label"].shape[0] if data["label"].ndim == 1 else -1
        want = {"particles": (n, self.n_particles, len(self.particle_features)),
                "mask": (n, self.n_particles), "label": (n,),
                "features": (n, len(self.feature_names))}
        for k, shape in want.items():
            if data[k].shape != shape:
                raise StoreError(f"{self.path}: append: {k} has shape {data[k].shape}, expected {shape}")
        if n == 0:
            return
        for k in ("particles", "features"):
            if not np.isfinite(data[k]).all():
                raise StoreError(f"{self.path}: append: {k} contains NaN or inf")
        lab = data["label"]
        if not np.isin(lab, list(self.label_names)).all():
            bad = sorted(set(np.unique(lab).tolist()) - set(self.label_names))
            raise StoreError(f"{self.path}: append: labels {bad} not in label_names {self.label_names}")
        for k in ARRAYS:
            self._buf[k].append(np.ascontiguousarray(data[k], dtype=_DTYPES[k]))
        self._buffered += n
        shard = self.chunk_size * self.shard_chunks
        if self._buffered >= shard:
            self._flush(whole_shards_only=True)

    def _flush(self, whole_shards_only: bool) -> None:
        shard = self.chunk_size * self.shard_chunks
        take = (self._buffered // shard) * shard if whole_shards_only else self._buffered
        if take == 0:
            return
        joined = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self._buf.items()}
        start, stop = self.n, self.n + take
        for k in ARRAYS:
            arr = self._arrays[k]
            arr.resize((stop, *arr.shape[1:]))
            arr[start:stop] = joined[k][:take]
            rest = joined[k][take:]
            self._buf[k] = [rest] if len(rest) else []
        self._buffered -= take
        self.n = stop

    # -- committing ------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush, write attributes and rename the temporary store to ``path``."""
        if self._closed:
            return self.path
        try:
            self._flush(whole_shards_only=False)
            if self.n == 0:
                raise StoreError(f"{self.path}: no samples were written; refusing to create an empty store")
            self._group.attrs.update(
                {
                    "schema_version": SCHEMA_VERSION,
                    "kind": self.kind,
                    "particle_features": self.particle_features,
                    "feature_names": self.feature_names,
                    "label_names": {str(k): v for k, v in sorted(self.label_names.items())},
                    "n_particles": self.n_particles,
                    "provenance": {
                        "clrdist_version": clrdist.__version__,
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        **self.provenance,
                    },
                }
            )
            _refuse_existing(self.path, self.overwrite)
            if self.path.exists() or self.path.is_symlink():
                _remove(self.path)
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (the output path is never touched)."""
        self._closed = True
        self._buf = {k: [] for k in ARRAYS}
        _remove(self.tmp_path)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_store(path: str | os.PathLike, data: dict[str, np.ndarray], **writer_kwargs: Any) -> Path:
    """Write a whole in-memory dataset (keys particles, mask, label, features) as one store."""
    n_particles = data["particles"].shape[1]
    with StoreWriter(path, n_particles=n_particles, **writer_kwargs) as w:
        w.append(data["particles"], data["mask"], data["label"], data["features"])
    return Path(path)


_MISSING = np.uint64(2**64 - 1)
_HAS_PREADV = hasattr(os, "preadv")


class _ShardReader:
    """Whole-chunk reads straight from shard files, for arrays in the exact layout StoreWriter
    writes (sharding_indexed, index at the end; inner codecs bytes(little) + blosc).

    This skips zarr-python's async machinery, which costs more than decompression itself on
    chunk-sized reads: per chunk it is one ``pread`` of the compressed bytes and one Blosc
    decompression (which releases the GIL, so decoder threads scale). Shard indexes are read
    once and cached. Any other layout makes ``ok`` False and callers use zarr.
    """

    def __init__(self, path: Path, names: tuple[str, ...]):
        self.path = path
        self.meta: dict[str, dict] = {}
        self.ok = True
        self._index: dict[tuple[str, int], np.ndarray] = {}
        self._local = threading.local()
        try:
            for name in names:
                meta = json.loads((path / name / "zarr.json").read_text())
                (codec,) = meta["codecs"]
                conf = codec["configuration"]
                inner = [c["name"] for c in conf["codecs"]]
                good = (codec["name"] == "sharding_indexed" and inner == ["bytes", "blosc"]
                        and conf["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
                        and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                        and conf.get("index_location", "end") == "end"
                        and meta["chunk_key_encoding"]["name"] == "default"
                        and meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/")
                if not good:
                    self.ok = False
                    return
                self.meta[name] = {
                    "shape": tuple(meta["shape"]),
                    "shard": tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
                    "chunk": tuple(conf["chunk_shape"]),
                    "dtype": np.dtype(_DTYPES[name]).newbyteorder("<"),
                }
        except (KeyError, ValueError, TypeError, OSError):
            self.ok = False

    def _shard_file(self, name: str, shard: int) -> Path:
        ndim = len(self.meta[name]["shape"])
        return self.path / name / "c" / str(shard) / Path(*(["0"] * (ndim - 1))) if ndim > 1 \
            else self.path / name / "c" / str(shard)

    def _shard_index(self, name: str, shard: int) -> np.ndarray | None:
        key = (name, shard)
        idx = self._index.get(key)
        if idx is None:
            m = self.meta[name]
            per_shard = m["shard"][0] // m["chunk"][0]
            f = self._shard_file(name, shard)
            if not f.exists():
                return None
            nbytes = 16 * per_shard
            with open(f, "rb") as fh:
                fh.seek(-(nbytes + 4), os.SEEK_END)
                idx = np.frombuffer(fh.read(nbytes), dtype="<u8").reshape(per_shard, 2)
            self._index[key] = idx
        return idx

    def compressed(self, name: str, i: int) -> bytes | None:
        """The compressed bytes of chunk ``i`` of array ``name`` (None: chunk never written)."""
        m = self.meta[name]
        per_shard = m["shard"][0] // m["chunk"][0]
        shard, j = divmod(i, per_shard)
        idx = self._shard_index(name, shard)
        if idx is None or idx[j, 0] == _MISSING:
            return None
        off, n = int(idx[j, 0]), int(idx[j, 1])
        with open(self._shard_file(name, shard), "rb") as fh:
            return os.pread(fh.fileno(), n, off)

    def decode(self, name: str, i: int, raw: bytes | None) -> np.ndarray:
        from numcodecs import blosc

        m = self.meta[name]
        rows = min(m["chunk"][0], m["shape"][0] - i * m["chunk"][0])
        if raw is None:
            return np.zeros((rows, *m["chunk"][1:]), dtype=m["dtype"])
        out = np.empty(m["chunk"], dtype=m["dtype"])  # writable (torch.from_numpy-safe)
        blosc.decompress(raw, out)
        return out[:rows]

    def read_chunk(self, i: int) -> dict[str, np.ndarray]:
        return {k: self.decode(k, i, self.compressed(k, i)) for k in self.meta}

    def decode_into(self, i: int, dest: dict[str, np.ndarray]) -> None:
        """Decompress chunk ``i`` of every array straight into ``dest[name]`` (C-contiguous,
        the full chunk shape), reading the compressed bytes into a per-thread buffer: no
        allocation, no copy besides decompression itself."""
        from numcodecs import blosc

        buf = getattr(self._local, "buf", None)
        for name, m in self.meta.items():
            per_shard = m["shard"][0] // m["chunk"][0]
            shard, j = divmod(i, per_shard)
            idx = self._shard_index(name, shard)
            out = dest[name]
            if idx is None or idx[j, 0] == _MISSING:
                out[...] = 0
                continue
            off, n = int(idx[j, 0]), int(idx[j, 1])
            fd = os.open(self._shard_file(name, shard), os.O_RDONLY)
            try:
                if _HAS_PREADV:
                    if buf is None or len(buf) < n:
                        buf = self._local.buf = bytearray(max(n, 1 << 20))
                    view = memoryview(buf)[:n]
                    got = os.preadv(fd, [view], off)
                else:  # platforms without preadv: one allocation per read
                    view = os.pread(fd, n, off)
                    got = len(view)
            finally:
                os.close(fd)
            if got != n:
                raise StoreError(f"{self.path}: shard of {name!r} is truncated (chunk {i})")
            blosc.decompress(view, out)


class SampleStore:
    """A validated, read-only view of a store (use :func:`open_store`)."""

    def __init__(self, path: Path, group: zarr.Group, arrays: dict[str, zarr.Array], attrs: dict):
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
        self._fast = _ShardReader(path, ARRAYS)

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
        return {k: np.asarray(a[start:stop]) for k, a in self.arrays.items()}

    def read_chunk(self, i: int) -> dict[str, np.ndarray]:
        """Chunk ``i`` (every array), decoded straight from its shard when the layout allows."""
        a, b = self.chunk_bounds(i)
        if self._fast.ok:
            return self._fast.read_chunk(i)
        return self.read(a, b)

    def read_chunk_into(self, i: int, dest: dict[str, np.ndarray]) -> int:
        """Decode chunk ``i`` into ``dest`` (arrays of the full chunk shape); returns its rows."""
        a, b = self.chunk_bounds(i)
        if self._fast.ok:
            self._fast.decode_into(i, dest)
        else:
            for k, v in self.read(a, b).items():
                dest[k][: b - a] = v
        return b - a

    def read_all(self, max_samples: int | None = None) -> dict[str, np.ndarray]:
        stop = self.n if max_samples is None else min(self.n, int(max_samples))
        return self.read(0, stop)

    def nbytes_stored(self) -> int:
        """Bytes on disk under the store directory."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def content_hash(self) -> str:
        """sha256 over the store's metadata and shard files (identifies a parent of a split)."""
        import hashlib

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


def open_store(path: str | os.PathLike) -> SampleStore:
    """Open and validate a store; any problem raises :class:`StoreError` naming the path."""
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
    for key in ("kind", "particle_features", "feature_names", "label_names", "provenance"):
        if key not in attrs:
            raise StoreError(f"{path}: missing group attribute {key!r}")
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
    return SampleStore(path, group, arrays, dict(attrs))


def describe(store: SampleStore | str | os.PathLike) -> dict[str, Any]:
    """Summary of a store for ``clrdist data info`` (reads it chunk by chunk, bounded memory):
    samples, label counts, multiplicity stats, feature ranges, chunk and shard shapes, bytes on
    disk and compression ratio, attributes."""
    s = store if isinstance(store, SampleStore) else open_store(store)
    labels: dict[int, int] = {}
    mult_hist = np.zeros(s.n_particles + 1, dtype=np.int64)
    k = s.n_features
    fmin, fmax = np.full(k, np.inf), np.full(k, -np.inf)
    fsum = np.zeros(k)
    for i in range(s.n_chunks):
        d = s.read_chunk(i)
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
    }
