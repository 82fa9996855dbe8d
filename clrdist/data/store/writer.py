"""Writing a store: StoreWriter (temporary directory, renamed when complete) and the cleanup of
temporary stores left by killed writers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

import clrdist
from clrdist.data.store.base import (
    _DTYPES,
    _OWNER_FILE,
    ARRAYS,
    INTEGRITY_VERSION,
    KINDS,
    SCHEMA_VERSION,
    StoreError,
    _remove,
    refuse_existing,
    sample_order,
    sample_problems,
)
from clrdist.data.store.integrity import _file_records
from clrdist.data.store.stale import _proc_start, clean_stale_tmp


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)


@contextlib.contextmanager
def _writing(path: Path, what: str) -> Iterator[None]:
    """OSError while writing -> one-line StoreError naming the store and the file."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  }.get(e.errno, e.strerror or str(e))
        raise StoreError(f"{path}: cannot {what}: {reason}{where}") from None


def _settle_zarr(timeout: float = 10.0) -> None:
    """Wait for zarr's in-flight tasks. When one chunk write of a call fails (disk full), zarr
    raises at once while the call's other chunk writes still run and may create files, e.g.
    after the temporary store was removed. Best effort: zarr's loop is internal API."""
    try:
        # lazy: zarr's internal API, which another zarr version may lack (caught below)
        from zarr.core.sync import _get_loop

        loop = _get_loop()
    except Exception:  # noqa: BLE001 - another zarr version: nothing to wait for here
        return

    async def wait_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(wait_all(), loop).result(timeout + 1)


class StoreWriter:
    """Append samples to a new store; a context manager that commits on a clean exit.

    Appends are buffered and written a whole shard at a time (``chunk_size * shard_chunks``
    samples), so many small appends cost one resize and one write per shard. With
    ``shuffle_seed`` the samples are written in the random order :func:`sample_order` instead:
    appends go to uncompressed staging files inside the temporary store, and ``close`` writes
    the store shard by shard in that order (memory: one shard; extra disk: the raw size).

        with StoreWriter(out, kind="jet", particle_features=["pt", "eta", "phi"], ...) as w:
            w.append(particles, mask, label, features)

    Every append is checked by :func:`sample_problems` (finite values, pT >= 0, masks
    consistent with the particles, declared labels). On an exception inside the ``with`` block
    the temporary directory is removed and nothing appears at ``path``. OS errors (disk full,
    read-only file system) become a one-line :class:`StoreError` naming the path.
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
        shuffle_seed: int | Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        if kind not in KINDS:
            raise StoreError(f"{self.path}: unknown store kind {kind!r} (known: {', '.join(KINDS)})")
        if n_particles <= 0 or chunk_size <= 0 or shard_chunks <= 0:
            raise StoreError(f"{self.path}: n_particles, chunk_size and shard_chunks must be positive")
        if not particle_features or not feature_names:
            raise StoreError(f"{self.path}: particle_features and feature_names must not be empty")
        refuse_existing(self.path, overwrite)
        self.overwrite = overwrite
        self.kind = kind
        self.particle_features = list(particle_features)
        self.feature_names = list(feature_names)
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        self.n_particles = int(n_particles)
        self.chunk_size = int(chunk_size)
        self.shard_chunks = int(shard_chunks)
        self.provenance = dict(provenance or {})
        self.shuffle_seed = shuffle_seed
        if shuffle_seed is not None:
            sample_order(0, shuffle_seed)  # validates the seed
            seed_rec = [int(x) for x in shuffle_seed] if isinstance(shuffle_seed, Sequence) \
                else int(shuffle_seed)
            self.provenance.setdefault("order", {"shuffled": True, "seed": seed_rec,
                                                 "by": "clrdist.data.store.sample_order"})
        self.n = 0
        self._closed = False
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self._buffered = 0
        self._attached: dict[str, np.ndarray] = {}
        self._staging: dict[str, Any] = {}
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:12]}")
        nf, nk, p = len(self.particle_features), len(self.feature_names), self.n_particles
        self._shapes = {"particles": (p, nf), "mask": (p,), "label": (), "features": (nk,)}
        try:
            with _writing(self.path, "create the store"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                clean_stale_tmp(self.path)
                self._group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=3)
                # who writes this: a later writer removes it once this process is gone
                (self.tmp_path / _OWNER_FILE).write_text(json.dumps(
                    {"host": socket.gethostname(), "pid": os.getpid(),
                     "start": _proc_start(os.getpid())}))
                self._arrays = {}
                for name, rest in self._shapes.items():
                    self._arrays[name] = self._group.create_array(
                        name, shape=(0, *rest), dtype=_DTYPES[name], chunks=(self.chunk_size, *rest),
                        shards=(self.chunk_size * self.shard_chunks, *rest),
                        compressors=_compressor(), fill_value=0,
                        # every chunk on disk, the all-zero ones too: a missing shard is an error
                        config={"write_empty_chunks": True},
                    )
                if shuffle_seed is not None:
                    (self.tmp_path / ".staging").mkdir()
                    self._staging = {k: open(self.tmp_path / ".staging" / f"{k}.raw", "wb")
                                     for k in ARRAYS}
        except BaseException:
            self.abort()
            raise

    # -- appending -------------------------------------------------------------------------
    def append(self, particles: np.ndarray, mask: np.ndarray, label: np.ndarray,
               features: np.ndarray) -> None:
        """Append n samples: particles (n, P, F) float32, mask (n, P) bool, label (n,) int8,
        features (n, K) float32. Values must pass :func:`sample_problems`."""
        if self._closed:
            raise StoreError(f"{self.path}: append after close")
        data = {"particles": np.asarray(particles), "mask": np.asarray(mask),
                "label": np.asarray(label), "features": np.asarray(features)}
        n = data["label"].shape[0] if data["label"].ndim == 1 else -1
        for k, rest in self._shapes.items():
            if data[k].shape != (n, *rest):
                raise StoreError(f"{self.path}: append: {k} has shape {data[k].shape}, "
                                 f"expected {(n, *rest)}")
        if n == 0:
            return
        _check_labels(self.path, data["label"], self.n + self._buffered)
        data = {k: np.ascontiguousarray(data[k], dtype=_DTYPES[k]) for k in ARRAYS}
        n_bad, found = sample_problems(data, particle_features=self.particle_features,
                                       label_names=self.label_names,
                                       offset=self.n + self._buffered, limit=1)
        if n_bad:
            more = f" ({n_bad} bad samples in this append)" if n_bad > 1 else ""
            raise StoreError(f"{self.path}: append: {found[0]}{more}")
        if self._staging:
            with _writing(self.path, "write the store"):
                for k in ARRAYS:
                    self._staging[k].write(data[k].tobytes())
            self._buffered += n
            return
        for k in ARRAYS:
            self._buf[k].append(data[k])
        self._buffered += n
        shard = self.chunk_size * self.shard_chunks
        if self._buffered >= shard:
            self._flush(whole_shards_only=True)

    def attach(self, name: str, values: np.ndarray) -> None:
        """An extra per-sample array (first axis: every appended sample, in append order),
        written at ``close`` in the store's order (e.g. ``source_index`` of a split)."""
        if name in ARRAYS or not name.isidentifier():
            raise StoreError(f"{self.path}: cannot attach an array named {name!r}")
        self._attached[name] = np.asarray(values)

    def _flush(self, whole_shards_only: bool) -> None:
        shard = self.chunk_size * self.shard_chunks
        take = (self._buffered // shard) * shard if whole_shards_only else self._buffered
        if take == 0:
            return
        joined = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self._buf.items()}
        start, stop = self.n, self.n + take
        with _writing(self.path, "write the store"):
            for k in ARRAYS:
                arr = self._arrays[k]
                arr.resize((stop, *arr.shape[1:]))
                arr[start:stop] = joined[k][:take]
                rest = joined[k][take:]
                self._buf[k] = [rest] if len(rest) else []
        self._buffered -= take
        self.n = stop

    def _write_shuffled(self) -> np.ndarray:
        """Write the staged samples in the order sample_order(n, shuffle_seed); returns it."""
        n = self._buffered
        for f in self._staging.values():
            f.close()
        order = sample_order(n, self.shuffle_seed)
        shard = self.chunk_size * self.shard_chunks
        for k in ARRAYS:
            raw = self.tmp_path / ".staging" / f"{k}.raw"
            src = np.memmap(raw, dtype=_DTYPES[k], mode="r", shape=(n, *self._shapes[k]))
            arr = self._arrays[k]
            arr.resize((n, *arr.shape[1:]))
            for a in range(0, n, shard):
                idx = order[a:a + shard]
                srt = np.argsort(idx, kind="stable")  # ascending reads of the staging file
                block = np.empty((len(idx), *self._shapes[k]), dtype=_DTYPES[k])
                block[srt] = src[idx[srt]]
                arr[a:a + len(idx)] = block
            del src
            raw.unlink()
        (self.tmp_path / ".staging").rmdir()
        self._staging = {}
        self.n, self._buffered = n, 0
        return order

    # -- committing ------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush, record shard checksums, write attributes and rename the temporary store to
        ``path``."""
        if self._closed:
            return self.path
        try:
            with _writing(self.path, "write the store"):
                if self._staging:
                    if self._buffered == 0:
                        raise StoreError(f"{self.path}: no samples were written; refusing to "
                                         "create an empty store")
                    order = self._write_shuffled()
                else:
                    self._flush(whole_shards_only=False)
                    order = None
                if self.n == 0:
                    raise StoreError(f"{self.path}: no samples were written; refusing to create an empty store")
                for name, values in self._attached.items():
                    if len(values) != self.n:
                        raise StoreError(f"{self.path}: attached array {name!r} has {len(values)} "
                                         f"rows for {self.n} samples")
                    values = values if order is None else values[order]
                    self._group.create_array(name, data=values,
                                             chunks=(min(self.n, 1 << 20), *values.shape[1:]))
                names = (*ARRAYS, *self._attached)
                integrity = {"version": INTEGRITY_VERSION, "algorithm": "crc32c",
                             "files": {name: _file_records(self.tmp_path / name) for name in names},
                             # lengths too: an edited shape[0] must not add zeros or hide samples
                             "shapes": {name: list(self._group[name].shape) for name in names}}
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
                        "integrity": integrity,
                    }
                )
                (self.tmp_path / _OWNER_FILE).unlink()
                refuse_existing(self.path, self.overwrite)
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
        for f in self._staging.values():
            with contextlib.suppress(OSError):
                f.close()
        self._staging = {}
        _settle_zarr()
        with contextlib.suppress(OSError):
            _remove(self.tmp_path)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

def _check_labels(path: Path, label: np.ndarray, offset: int) -> None:
    """Labels must be integers in int8's range before they are cast (0.7, 257 or NaN would
    silently become 0, 1 or 0)."""
    if label.dtype == np.bool_ or not np.issubdtype(label.dtype, np.number):
        raise StoreError(f"{path}: append: label has dtype {label.dtype}, expected integers")
    if np.issubdtype(label.dtype, np.integer):
        bad = (label < -128) | (label > 127)
    else:
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(label) | (label != np.round(label)) | (label < -128) | (label > 127)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise StoreError(f"{path}: append: sample {offset + r}: label {label[r]!r} is not an "
                         f"integer in -128..127 ({int(bad.sum())} such labels in this append)")


def write_store(path: str | os.PathLike, data: dict[str, np.ndarray], **writer_kwargs: Any) -> Path:
    """Write a whole in-memory dataset (keys particles, mask, label, features) as one store."""
    n_particles = data["particles"].shape[1]
    with StoreWriter(path, n_particles=n_particles, **writer_kwargs) as w:
        w.append(data["particles"], data["mask"], data["label"], data["features"])
    return Path(path)

