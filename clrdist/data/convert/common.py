"""What every format's converter shares: :class:`ConvertError`, the HDF5 checks, the block
readers of pandas and h5py files, the per-block value checks, the hardest-first constituent
table (:func:`_hardest`) and the :class:`_Source` record a format's opener returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clrdist.errors import ClrdistError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ConvertError(ClrdistError, ValueError):
    """An input file that cannot become a store; the message names the file and the problem."""


# -- helpers ------------------------------------------------------------------------------------
def _check_hdf5(path: Path) -> None:
    if not path.exists():
        raise ConvertError(f"{path}: no such file")
    if not path.is_file():
        raise ConvertError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ConvertError(f"{path}: empty file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head != _HDF5_SIGNATURE:  # pandas / h5py put the superblock at 0; else a user block
        # lazy: h5py (~50 ms) only when an input is read; generation imports this package without it
        import h5py

        if not h5py.is_hdf5(path):
            raise ConvertError(f"{path}: not an HDF5 file")


def _one_line(e: BaseException) -> str:
    """The informative line of an (often multi-line HDF5 back trace) error message."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if any("back trace" in ln for ln in lines[:1]):
        # HDF5 stacks: the innermost message sits just before "End of HDF5 error back trace"
        inner = [ln for ln in lines if not ln.startswith("File ") and "back trace" not in ln]
        lines = inner[-2:-1] or inner[-1:] or lines
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text}".strip()


def _first_bad_row(bad_rows: np.ndarray) -> int:
    return int(np.flatnonzero(bad_rows)[0])


def _check_values(path: Path, row0: int, arrays: dict[str, np.ndarray]) -> None:
    """NaN/inf anywhere in the named arrays -> ConvertError naming the first row."""
    for name, a in arrays.items():
        fin = np.isfinite(a).reshape(len(a), -1).all(1)
        if not fin.all():
            raise ConvertError(f"{path}: row {row0 + _first_bad_row(~fin)}: NaN or inf in {name}")


def _check_nonnegative(path: Path, row0: int, a: np.ndarray, what: str) -> None:
    neg = (a < 0).reshape(len(a), -1).any(1)
    if neg.any():
        r = _first_bad_row(neg)
        v = a[r][a[r] < 0].flat[0]
        raise ConvertError(f"{path}: row {row0 + r}: negative {what} ({v:g})")


def _check_labels(path: Path, row0: int, label: np.ndarray, known: set[int]) -> None:
    bad = ~np.isin(label, list(known))
    if bad.any():
        r = _first_bad_row(bad)
        raise ConvertError(f"{path}: row {row0 + r}: label {label[r]:g} outside the known set "
                           f"{sorted(known)}")


def _hardest(pt: np.ndarray, cols: list[np.ndarray], keep: np.ndarray, p: int):
    """Sort each row by pT (descending, only ``keep``), keep the first p; zero padded."""
    key = np.where(keep, pt, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :p]
    mask = np.take_along_axis(keep, order, 1)
    out = [np.where(mask, np.take_along_axis(c, order, 1), 0.0) for c in cols]
    if out[0].shape[1] < p:
        pad = p - out[0].shape[1]
        out = [np.pad(c, ((0, 0), (0, pad))) for c in out]
        mask = np.pad(mask, ((0, 0), (0, pad)))
    return np.stack(out, -1).astype(np.float32), mask


# -- readers: blocks of raw rows ------------------------------------------------------------------
class _PandasReader:
    """Blocks of a pandas HDFStore frame (``fixed`` or ``table`` format) via select(start, stop)."""

    def __init__(self, path: Path, key: str | None):
        # lazy: pandas (~0.4 s) only for the layouts pandas wrote
        import pandas as pd

        self.path = path
        try:
            self._store = pd.HDFStore(str(path), mode="r")
            keys = [k for k in self._store.keys() if k != "/"]
        except Exception as e:  # pytables raises its own types for truncated / corrupt files
            raise ConvertError(f"{path}: cannot read (truncated or corrupt HDF5 file?): "
                               f"{_one_line(e)}") from None
        if key is not None:
            if f"/{key.strip('/')}" not in keys:
                self.close()
                raise ConvertError(f"{path}: no pandas table {key!r} (found: {', '.join(keys) or 'none'})")
            self.key = f"/{key.strip('/')}"
        else:
            if len(keys) != 1:
                self.close()
                raise ConvertError(f"{path}: expected exactly one pandas table, found "
                                   f"{len(keys)} ({', '.join(keys) or 'none'})")
            self.key = keys[0]
        try:
            head = self._store.select(self.key, start=0, stop=0)
            storer = self._store.get_storer(self.key)
            self.nrows = int(storer.nrows if storer.is_table else storer.shape[0])
        except Exception as e:
            self.close()
            raise ConvertError(f"{path}: cannot read table {self.key}: {_one_line(e)}") from None
        if not hasattr(head, "columns"):
            self.close()
            raise ConvertError(f"{path}: {self.key} is not a pandas DataFrame")
        self.columns = [str(c) for c in head.columns]

    def read(self, start: int, stop: int, columns: list[int] | None = None) -> np.ndarray:
        try:
            df = self._store.select(self.key, start=start, stop=stop)
        except Exception as e:
            raise ConvertError(f"{self.path}: cannot read rows {start}-{stop} (truncated or "
                               f"corrupt file?): {_one_line(e)}") from None
        values = df.to_numpy(dtype=np.float64, copy=False)
        if len(values) != stop - start:
            raise ConvertError(f"{self.path}: read {len(values)} rows at {start}, expected "
                               f"{stop - start} (truncated file?)")
        return values if columns is None else values[:, columns]

    def close(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
            self._store = None


class _H5Reader:
    """Blocks of one h5py dataset."""

    def __init__(self, path: Path, dataset: str):
        # lazy: h5py (~50 ms) only when an input is read; generation imports this package without it
        import h5py

        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except Exception as e:
            raise ConvertError(f"{path}: cannot read (truncated or corrupt HDF5 file?): "
                               f"{_one_line(e)}") from None
        if dataset not in self._file:
            found = ", ".join(sorted(self._file.keys())) or "none"
            self.close()
            raise ConvertError(f"{path}: missing dataset {dataset!r} (found: {found})")
        self.ds = self._file[dataset]
        if not isinstance(self.ds, h5py.Dataset):
            self.close()
            raise ConvertError(f"{path}: {dataset!r} is not a dataset")
        self.nrows = int(self.ds.shape[0]) if self.ds.ndim else 0

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(self.ds[start:stop], dtype=np.float64)
        except Exception as e:
            raise ConvertError(f"{self.path}: cannot read rows {start}-{stop} (truncated or "
                               f"corrupt file?): {_one_line(e)}") from None

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None


# -- what a format's opener returns -------------------------------------------------------------
Block = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class _Source:
    """One opened, layout-checked input: rows, a block reader and the block -> samples step."""

    path: Path
    nrows: int
    row_bytes: int
    read: Callable[[int, int], np.ndarray]
    process: Callable[[np.ndarray, int], Block]
    close: Callable[[], None]
    info: dict = field(default_factory=dict)
