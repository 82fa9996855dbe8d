"""Whole-chunk reads straight from shard files (the fast path of SampleStore)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
from numcodecs import blosc

from clrdist.data.store.base import _DTYPES, StoreError
from clrdist.data.store.integrity import _Integrity, _shard_key

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

