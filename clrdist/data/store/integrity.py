"""Integrity record: each data file's size and CRC-32C, checked on open and on first read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import google_crc32c

from clrdist.data.store.base import StoreError


def _file_records(array_dir: Path) -> dict[str, list[int]]:
    """{path relative to the array: [size, crc32c]} of every data file of one array."""
    out = {}
    for f in sorted(array_dir.rglob("*")):
        if f.is_file() and f.name != "zarr.json":
            data = f.read_bytes()
            out[f.relative_to(array_dir).as_posix()] = [len(data), google_crc32c.value(data)]
    return out


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
            # version 1 records (clrdist before 0.x) hold no shapes: an array's length was not
            # covered (an edited shape[0] read zeros or hid samples); they count as no record
            self.shapes = ({str(k): tuple(int(d) for d in v) for k, v in record["shapes"].items()}
                           if "shapes" in record else None)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise StoreError(f"{path}: malformed 'integrity' attribute") from None
        self._checked: set[tuple[str, str]] = set()

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Every array's shape (its length included) is the recorded one; ``shapes`` {array:
        shape} as its metadata says."""
        for name, shape in shapes.items():
            want = (self.shapes or {}).get(name)
            if want is None:
                raise StoreError(f"{self.path}: array {name!r} is not in the store's integrity "
                                 "record (array added or replaced after writing?)")
            if tuple(shape) != want:
                what = (f"{shape[0]} samples, {want[0]} recorded" if shape[1:] == want[1:]
                        else f"shape {list(shape)}, {list(want)} recorded")
                raise StoreError(f"{self.path}: array {name!r} has {what} (its "
                                 f"{name}/zarr.json was altered)")

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


NO_CHECKSUMS = ("no integrity record of its shards and array lengths (written by an older clrdist, "
                "or the 'integrity' attribute was removed): a missing, altered or resized array "
                "cannot be detected; rewrite the store (clrdist --allow-unverified data split "
                "--fractions 1 --names all) to add one")
UNVERIFIED_ENV = "CLRDIST_ALLOW_UNVERIFIED"  # "1": open stores without a record (warning only)


def unverified_allowed() -> bool:
    """The user accepted stores without an integrity record (``clrdist --allow-unverified``,
    which sets CLRDIST_ALLOW_UNVERIFIED=1 for this process and the Ray workers it starts)."""
    return os.environ.get(UNVERIFIED_ENV, "") == "1"
