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
crash never leaves a half store that looks valid; a later write to the same output removes the
temporary directories of writers that were killed. Readers validate the schema and fail with a
:class:`StoreError` that names the store and the problem.

Order: a writer given ``shuffle_seed`` writes its samples in the random order
:func:`sample_order` (seed recorded in ``provenance.order``), so that any contiguous range of
the store, and so any batch of the stream, has the store's class mix up to binomial noise.

Integrity: every array is written with all its chunks (also the all-zero ones) and the group
attribute ``integrity`` records each shard file's size and CRC-32C. ``open_store`` checks that
every recorded file exists with its size; the first read of a shard checks its CRC. A missing,
truncated or altered shard raises :class:`StoreError` naming the store, the array and the shard,
never reads as zeros. :func:`verify_store` re-checks all (or a sample of) the shards and
:func:`check_sample_sanity` checks a random sample of the values (finite, pT >= 0, masks
consistent with the particles, labels declared).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

import clrdist
from clrdist.errors import ClrdistError

SCHEMA_VERSION = 1
KINDS = ("jet", "dijet", "event")
ARRAYS = ("particles", "mask", "label", "features")
_DTYPES = {"particles": np.float32, "mask": np.bool_, "label": np.int8, "features": np.float32}
INTEGRITY_VERSION = 1
_ORDER_TAG = 0x0DE7  # mixed into the seed of sample_order
_OWNER_FILE = ".clrdist-writer.json"  # inside a temporary store: who is writing it
log = logging.getLogger(__name__)


class StoreError(ClrdistError, ValueError):
    """A store that cannot be written or read; the message names the store path and the problem."""


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)


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
    import asyncio

    try:
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


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _writer_alive(owner: dict) -> bool | None:
    """True / False: the writer process recorded in ``owner`` runs / is gone; None: cannot tell
    (another host, or no record)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = _proc_start(owner["pid"])
    return not (start is not None and owner.get("start") is not None and start != owner["start"])


def clean_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Remove ``<path>.tmp-*`` directories left by killed writers of ``path``; returns them.

    A temporary store records its writer (host, pid, process start time); it is removed when
    that process no longer runs on this host. Ones whose writer cannot be checked (another
    host, or written by an older clrdist) are left alone and named in a warning."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for tmp in sorted(path.parent.glob(f"{path.name}.tmp-*")):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            owner = json.loads((tmp / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        alive = _writer_alive(owner)
        if alive is False:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
                removed.append(tmp)
                log.warning("removed %s: temporary store of a killed writer (pid %s)", tmp,
                            owner.get("pid"))
        elif alive is None:
            log.warning("%s: temporary store of a writer that cannot be checked (%s); if no "
                        "write to %s is running, remove it: rm -r %s", tmp,
                        f"host {owner['host']}" if owner.get("host") else "no writer record",
                        path, tmp)
    return removed


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
                integrity = {"version": INTEGRITY_VERSION, "algorithm": "crc32c",
                             "files": {name: _file_records(self.tmp_path / name)
                                       for name in (*ARRAYS, *self._attached)}}
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


def _file_records(array_dir: Path) -> dict[str, list[int]]:
    """{path relative to the array: [size, crc32c]} of every data file of one array."""
    out = {}
    for f in sorted(array_dir.rglob("*")):
        if f.is_file() and f.name != "zarr.json":
            data = f.read_bytes()
            out[f.relative_to(array_dir).as_posix()] = [len(data), google_crc32c.value(data)]
    return out


def write_store(path: str | os.PathLike, data: dict[str, np.ndarray], **writer_kwargs: Any) -> Path:
    """Write a whole in-memory dataset (keys particles, mask, label, features) as one store."""
    n_particles = data["particles"].shape[1]
    with StoreWriter(path, n_particles=n_particles, **writer_kwargs) as w:
        w.append(data["particles"], data["mask"], data["label"], data["features"])
    return Path(path)


_MISSING = np.uint64(2**64 - 1)
_HAS_PREADV = hasattr(os, "preadv")


def _shard_key(ndim: int, shard: int) -> str:
    """Key of shard ``shard`` (along the sample axis) of an ndim-dimensional array."""
    return "/".join(["c", str(shard), *(["0"] * (ndim - 1))])


class _Integrity:
    """The recorded size and CRC-32C of every data file of a store; a file's CRC is checked the
    first time it is read (``check``) and sizes when the store is opened (``check_sizes``)."""

    def __init__(self, path: Path, record: Any):
        self.path = path
        try:
            if record["algorithm"] != "crc32c":
                raise ValueError(record["algorithm"])
            self.files = {str(name): {str(k): (int(v[0]), int(v[1])) for k, v in files.items()}
                          for name, files in record["files"].items()}
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise StoreError(f"{path}: malformed 'integrity' attribute") from None
        self._checked: set[tuple[str, str]] = set()

    def _where(self, name: str, key: str) -> str:
        return f"{self.path}: array {name!r}: shard {key}"

    def check_sizes(self, shards: dict[str, tuple[int, int]]) -> None:
        """Every recorded file exists with its size; ``shards`` {array: (ndim, n_shards)} must
        all be recorded."""
        for name, (ndim, n) in shards.items():
            files = self.files.get(name, {})
            for k in range(n):
                if _shard_key(ndim, k) not in files:
                    raise StoreError(f"{self._where(name, _shard_key(ndim, k))} is not in the "
                                     "store's integrity record (array replaced or resized?)")
        for name, files in self.files.items():
            for key, (size, _) in files.items():
                f = self.path / name / key
                try:
                    got = f.stat().st_size
                except FileNotFoundError:
                    raise StoreError(f"{self._where(name, key)} is missing ({f})") from None
                except OSError as e:
                    raise StoreError(f"{self._where(name, key)}: cannot read ({e.strerror})") from None
                if got != size:
                    raise StoreError(f"{self._where(name, key)} has {got} bytes, {size} recorded "
                                     f"(truncated or altered: {f})")

    def check(self, name: str, key: str, data: bytes | None = None, force: bool = False) -> bytes | None:
        """Check one file's size and CRC-32C (once, unless ``force``); returns its bytes when it
        had to read them. Files without a record pass (arrays attached after writing)."""
        rec = self.files.get(name, {}).get(key)
        if rec is None or (not force and (name, key) in self._checked):
            return data
        f = self.path / name / key
        if data is None:
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                raise StoreError(f"{self._where(name, key)} is missing ({f})") from None
            except OSError as e:
                raise StoreError(f"{self._where(name, key)}: cannot read ({e.strerror})") from None
        if len(data) != rec[0]:
            raise StoreError(f"{self._where(name, key)} has {len(data)} bytes, {rec[0]} recorded "
                             f"(truncated or altered: {f})")
        if google_crc32c.value(data) != rec[1]:
            raise StoreError(f"{self._where(name, key)} does not match its recorded CRC-32C "
                             f"(altered or corrupt: {f})")
        self._checked.add((name, key))
        return data


class _ShardReader:
    """Whole-chunk reads straight from shard files, for arrays in the exact layout StoreWriter
    writes (sharding_indexed, index at the end; inner codecs bytes(little) + blosc).

    This skips zarr-python's async machinery, which costs more than decompression itself on
    chunk-sized reads: per chunk it is one ``pread`` of the compressed bytes and one Blosc
    decompression (which releases the GIL, so decoder threads scale). Shard indexes are read
    once and cached. Any other layout makes ``ok`` False and callers use zarr.
    """

    def __init__(self, path: Path, names: tuple[str, ...], integrity: _Integrity | None = None):
        self.path = path
        self.integrity = integrity
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
        return self.path / name / _shard_key(len(self.meta[name]["shape"]), shard)

    def _shard_index(self, name: str, shard: int) -> np.ndarray | None:
        """The (chunks, 2) offset / length index of one shard, read once; with an integrity
        record the whole shard is checked against its CRC first."""
        key = (name, shard)
        idx = self._index.get(key)
        if idx is None:
            m = self.meta[name]
            per_shard = m["shard"][0] // m["chunk"][0]
            nbytes = 16 * per_shard
            skey = _shard_key(len(m["shape"]), shard)
            f = self.path / name / skey
            if self.integrity is not None:
                data = self.integrity.check(name, skey, force=True)
                if data is None:  # not recorded: the store was written without it
                    return None
                tail, size = data[-(nbytes + 4):-4], len(data)
            else:  # a store written before checksums: an absent shard may be all fill value
                try:
                    size = f.stat().st_size
                except FileNotFoundError:
                    return None
                if size < nbytes + 4:
                    raise StoreError(f"{self.path}: array {name!r}: shard {skey} is truncated "
                                     f"({size} bytes, its index alone is {nbytes + 4}: {f})")
                with open(f, "rb") as fh:
                    fh.seek(-(nbytes + 4), os.SEEK_END)
                    tail = fh.read(nbytes)
            idx = np.frombuffer(tail, dtype="<u8").reshape(per_shard, 2)
            real = idx[:, 0] != _MISSING
            if (idx[real, 0] + idx[real, 1] > size - nbytes - 4).any():
                raise StoreError(f"{self.path}: array {name!r}: shard {skey} is truncated or "
                                 f"corrupt (its index points past the end of {f})")
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
            raw = os.pread(fh.fileno(), n, off)
        if len(raw) != n:
            raise StoreError(f"{self.path}: array {name!r}: shard {shard} is truncated (chunk {i})")
        return raw

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
                raise StoreError(f"{self.path}: array {name!r}: shard {shard} is truncated (chunk {i})")
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
        # integrity: None for stores written before checksums (they read, unverified)
        self.integrity = _Integrity(path, attrs["integrity"]) if "integrity" in attrs else None
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
        except Exception as e:  # corrupt array metadata: JSONDecodeError, ValueError, ...
            raise StoreError(f"{path}: array {name!r}: unreadable metadata {path / name / 'zarr.json'} "
                             f"({type(e).__name__}: {_first_line(e)})") from None
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
    if "integrity" not in attrs and str(path.resolve()) not in _WARNED_UNVERIFIED:
        _WARNED_UNVERIFIED.add(str(path.resolve()))
        log.warning("%s: %s", path, NO_CHECKSUMS)
    return SampleStore(path, group, arrays, dict(attrs))


NO_CHECKSUMS = ("no shard checksums recorded (written before clrdist recorded them): a missing or "
                "altered shard cannot be detected; rewrite the store (e.g. clrdist data split "
                "--fractions 1 --names all) to add them")
_WARNED_UNVERIFIED: set[str] = set()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


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
