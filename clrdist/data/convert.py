"""Public file formats -> sample store (``clrdist data convert {toptag,lhco,adc2021}``).

Layouts (see docs/reference.md):

- ``toptag``: top tagging reference dataset; pandas HDFStore key ``table``; columns E_i, PX_i,
  PY_i, PZ_i (i = 0..199, real where E > 0), truth*, ttv, is_signal_new (1 top, 0 QCD).
  -> kind ``jet``, particles (pT, eta, phi) of the P hardest constituents (default 50),
  features jet_pt, jet_eta, jet_phi, jet_mass (from all constituents), n_constituents.
- ``lhco``: LHC Olympics 2020 R&D (or black box); one pandas frame under any key, one row per
  event: up to 700 (pT, eta, phi) triplets, zero padded, then the label (1 signal) when the
  column count is 3k + 1, no label (-1) when it is 3k. Every event is clustered with FastJet
  (anti-kT, R = 0.8); the two leading jets' P hardest constituents each (default 50, so 100
  slots: J1 first, then J2) are stored, with m_jj, pT/eta/phi/mass of J1, J2 and their
  N-subjettiness ratios tau21, tau32 (exclusive-kT axes, R0 = 0.8).
- ``adc2021``: CMS ADC2021; h5 dataset ``Particles`` (N, 19, 4) = (pT, eta, phi, class); the
  fixed slot layout (MET, 4 e, 4 mu, 10 jets) is kept because slot position carries the object
  type; features MET, MET phi, object counts, H_T. Labels from the file name (background 0,
  signals 1..4, black box -1) unless ``label=`` is given.

Files are read in blocks (memory stays bounded whatever the file size); every block is checked
(NaN/inf, negative pT or energy, unknown labels) and any problem is a :class:`ConvertError`
naming the file and the problem. The store is written under a temporary name, so a failed
conversion leaves nothing at the output path. Several input files append into one store;
provenance records each source's name, size and sha256 and the converter version. The store's
samples are in a seeded random order (``seed``, recorded in ``provenance.order``), not the
files' order.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clrdist.data.schema import (
    ADC_FEATURES,
    JET_FEATURES,
    LHCO_FEATURES,
    PARTICLE_FEATURES,
    TOP_QCD_LABELS,
)
from clrdist.data.store import StoreWriter, refuse_existing
from clrdist.errors import ClrdistError
from clrdist.physics.observables import (
    import_fastjet,
    jet_kinematics,
    jet_p4,
    m_jj,
    nsubjettiness,
    p4_from_pt_eta_phi,
    pt_eta_phi,
    tau_ratios,
)

CONVERTER_VERSION = "1.0"
ADC_LABELS = {-1: "unknown", 0: "background", 1: "Ato4l", 2: "leptoquark", 3: "hChToTauNu",
              4: "hToTauTau"}
_ADC_FILE_LABELS = [("background", 0), ("ato4l", 1), ("leptoquark", 2), ("hchtotaunu", 3),
                    ("htotautau", 4), ("blackbox", -1)]
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_BLOCK_BYTES = 64 << 20  # raw input bytes per block


class ConvertError(ClrdistError, ValueError):
    """An input file that cannot become a store; the message names the file and the problem."""


# -- helpers ------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


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


# -- the three formats ---------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    particle_features: list[str]
    feature_names: list[str]
    label_names: dict[int, str]
    default_particles: int
    open: Callable[..., _Source]

    def n_slots(self, max_particles: int) -> int:
        return 2 * max_particles if self.kind == "dijet" else max_particles


def _open_toptag(path: Path, max_particles: int, label: int | None) -> _Source:
    r = _PandasReader(path, "table")
    cols = {c: i for i, c in enumerate(r.columns)}
    n_const = 0
    while f"E_{n_const}" in cols:
        n_const += 1
    need = [f"{c}_{i}" for i in range(max(n_const, 1)) for c in ("E", "PX", "PY", "PZ")]
    need.append("is_signal_new")
    missing = [c for c in need if c not in cols]
    if missing:
        r.close()
        more = f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""
        raise ConvertError(f"{path}: missing columns {', '.join(missing[:4])}{more} in table "
                           f"{r.key} (not the top tagging layout)")
    # (n_const, 4) column numbers of each constituent's (px, py, pz, E)
    idx4 = np.array([[cols[f"{c}_{i}"] for c in ("PX", "PY", "PZ", "E")] for i in range(n_const)])
    lab_col = cols["is_signal_new"]

    def process(raw: np.ndarray, row0: int) -> Block:
        p4 = raw[:, idx4]  # (n, n_const, 4)
        lab = raw[:, lab_col]
        _check_values(path, row0, {"constituent 4-momenta": p4, "is_signal_new": lab})
        e = p4[..., 3]
        _check_nonnegative(path, row0, e, "constituent energy E")
        _check_labels(path, row0, lab, {0, 1})
        kin = pt_eta_phi(p4)
        pt = kin[..., 0]
        real = (e > 0) & (pt > 0)
        particles, mask = _hardest(pt, [pt, kin[..., 1], kin[..., 2]], real, max_particles)
        del kin
        w = real.astype(np.float64)
        jet = jet_kinematics(np.stack([(p4[..., k] * w).sum(1) for k in range(4)], 1))  # all real
        feats = np.concatenate([jet, real.sum(1)[:, None]], 1).astype(np.float32)
        return particles, mask, lab.astype(np.int8), feats

    return _Source(path, r.nrows, 8 * len(r.columns), r.read, process, r.close,
                   {"table": r.key, "constituent_slots": n_const})


def _cluster_dijets(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, real: np.ndarray,
                    max_particles: int, radius: float = 0.8):
    """Two leading anti-kT jets of each event; (particles (n, 2P, 3), mask, features (n, 16))."""
    import awkward as ak

    fastjet = import_fastjet()
    n = len(pt)
    counts = real.sum(1)
    fpt, feta, fphi = pt[real], eta[real], phi[real]
    f4 = p4_from_pt_eta_phi(fpt, feta, fphi)  # massless
    events = ak.unflatten(ak.zip({"px": f4[:, 0], "py": f4[:, 1], "pz": f4[:, 2], "E": f4[:, 3]}), counts)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = fastjet.ClusterSequence(events, jetdef)
        jets = cs.inclusive_jets(min_pt=0.0)
        cidx = cs.constituent_index(min_pt=0.0)
    jpt = np.hypot(jets.px, jets.py)
    order = ak.argsort(jpt, axis=1, ascending=False)
    lead = jets[order][:, :2]
    lidx = cidx[order][:, :2]
    n_jets = ak.to_numpy(ak.num(lead))
    # per-event offsets into the flat (real) particle arrays
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    particles = np.zeros((n, 2 * max_particles, 3), np.float32)
    mask = np.zeros((n, 2 * max_particles), bool)
    kin = np.zeros((n, 2, 4))  # pt, eta, phi, mass
    p4 = np.zeros((n, 2, 4))  # jet four-momenta
    taus = np.zeros((n, 2, 3))
    nconst = np.zeros((n, 2))
    for j in range(2):
        has = n_jets > j
        if not has.any():
            continue
        ev = np.flatnonzero(has)
        sub = lidx[has][:, j]  # (n_has, var) constituent indices
        nc = ak.to_numpy(ak.num(sub))
        flat = ak.to_numpy(ak.flatten(sub)).astype(np.int64) + np.repeat(start[ev], nc)
        # padded constituent table for this jet of every event that has it
        width = int(nc.max())
        slot = np.arange(width)[None, :] < nc[:, None]
        cpt = np.zeros((len(ev), width))
        ceta, cphi = np.zeros_like(cpt), np.zeros_like(cpt)
        cpt[slot], ceta[slot], cphi[slot] = fpt[flat], feta[flat], fphi[flat]
        p, m = _hardest(cpt, [cpt, ceta, cphi], slot, max_particles)
        particles[ev, j * max_particles:(j + 1) * max_particles] = p
        mask[ev, j * max_particles:(j + 1) * max_particles] = m
        p4[ev, j] = jet_p4(cpt, ceta, cphi, slot)  # from all constituents, not only the P kept
        kin[ev, j] = jet_kinematics(p4[ev, j])
        taus[ev, j] = nsubjettiness(cpt, ceta, cphi, slot, r0=radius)
        nconst[ev, j] = nc
    t21, t32 = tau_ratios(taus)
    mjj = m_jj(p4[:, 0], p4[:, 1])  # 0 four-vector for a missing J2
    feats = np.stack([mjj, kin[:, 0, 3], kin[:, 1, 3], t21[:, 0], t32[:, 0], t21[:, 1], t32[:, 1],
                      kin[:, 0, 0], kin[:, 0, 1], kin[:, 0, 2], kin[:, 1, 0], kin[:, 1, 1],
                      kin[:, 1, 2], nconst[:, 0], nconst[:, 1], counts], 1).astype(np.float32)
    return particles, mask, feats


def _open_lhco(path: Path, max_particles: int, label: int | None) -> _Source:
    r = _PandasReader(path, None)
    ncols = len(r.columns)
    if ncols % 3 == 1 and ncols > 1:
        n_part, has_label = (ncols - 1) // 3, True
    elif ncols % 3 == 0 and ncols > 0:
        n_part, has_label = ncols // 3, False
    else:
        r.close()
        raise ConvertError(f"{path}: table {r.key} has {ncols} columns; the LHCO layout is "
                           f"3 x particles (+ 1 label), e.g. 2101")

    def process(raw: np.ndarray, row0: int) -> Block:
        trip = raw[:, : 3 * n_part].reshape(len(raw), n_part, 3)
        _check_values(path, row0, {"particles": trip} | ({"label": raw[:, -1]} if has_label else {}))
        _check_nonnegative(path, row0, trip[..., 0], "particle pT")
        if has_label:
            lab = raw[:, -1]
            _check_labels(path, row0, lab, {0, 1})
        else:
            lab = np.full(len(raw), -1 if label is None else label)
        real = trip[..., 0] > 0
        if not real.any(1).all():
            raise ConvertError(f"{path}: row {row0 + _first_bad_row(~real.any(1))}: event has no particles")
        particles, mask, feats = _cluster_dijets(trip[..., 0], trip[..., 1], trip[..., 2], real,
                                                 max_particles)
        return particles, mask, lab.astype(np.int8), feats

    return _Source(path, r.nrows, 8 * ncols, r.read, process, r.close,
                   {"table": r.key, "particle_slots": n_part, "has_label": has_label})


def adc_label_from_name(path: Path) -> int | None:
    name = path.name.lower().replace("_", "").replace("-", "")
    for key, lab in _ADC_FILE_LABELS:
        if key in name:
            return lab
    return None


def _open_adc(path: Path, max_particles: int, label: int | None) -> _Source:
    if max_particles != 19:
        raise ConvertError(f"{path}: ADC2021 events have a fixed layout of 19 objects "
                           f"(MET, 4 e, 4 mu, 10 jets); max_particles must be 19")
    lab = label if label is not None else adc_label_from_name(path)
    if lab is None:
        known = ", ".join(k for k, _ in _ADC_FILE_LABELS)
        raise ConvertError(f"{path}: cannot tell the process from the file name (known: {known}); "
                           "pass label=ID")
    if lab not in ADC_LABELS:
        raise ConvertError(f"{path}: label {lab} outside the known set {sorted(ADC_LABELS)}")
    r = _H5Reader(path, "Particles")
    if r.ds.ndim != 3 or r.ds.shape[1:] != (19, 4):
        shape = r.ds.shape
        r.close()
        raise ConvertError(f"{path}: dataset 'Particles' has shape {shape}, expected (N, 19, 4)")

    def process(raw: np.ndarray, row0: int) -> Block:
        _check_values(path, row0, {"Particles": raw})
        _check_nonnegative(path, row0, raw[..., 0], "object pT")
        pt = raw[..., 0]
        mask = pt > 0
        particles = np.where(mask[..., None], raw[..., :3], 0.0).astype(np.float32)
        feats = np.stack([pt[:, 0], raw[:, 0, 2], mask[:, 1:5].sum(1), mask[:, 5:9].sum(1),
                          mask[:, 9:19].sum(1), pt[:, 9:19].sum(1)], 1).astype(np.float32)
        return particles, mask, np.full(len(raw), lab, np.int8), feats

    return _Source(path, r.nrows, 19 * 4 * 8, r.read, process, r.close,
                   {"dataset": "Particles", "label": int(lab)})


FORMATS: dict[str, Format] = {
    "toptag": Format("toptag", "jet", PARTICLE_FEATURES, JET_FEATURES, TOP_QCD_LABELS, 50,
                     _open_toptag),
    "lhco": Format("lhco", "dijet", PARTICLE_FEATURES, LHCO_FEATURES,
                   {-1: "unknown", 0: "background", 1: "signal"}, 50, _open_lhco),
    "adc2021": Format("adc2021", "event", PARTICLE_FEATURES, ADC_FEATURES, ADC_LABELS, 19,
                      _open_adc),
}


# -- the driver -----------------------------------------------------------------------------------
def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RowsPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def iter_blocks(src: _Source, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, src.nrows, block_rows):
        stop = min(src.nrows, start + block_rows)
        yield start, src.read(start, stop)


def convert(fmt: str, inputs: list[str | os.PathLike], out: str | os.PathLike, *,
            max_particles: int | None = None, overwrite: bool = False,
            block_rows: int | None = None, chunk_size: int = 4096, shard_chunks: int = 16,
            label: int | None = None, progress: bool = True, seed: int = 0) -> Path:
    """Convert one or more input files of format ``fmt`` into one store at ``out``.

    ``block_rows`` bounds memory (default: about 64 MB of raw input per block). The store is
    written in the random order ``sample_order(n, seed)`` (class-sorted inputs, e.g. one ADC
    file per process, give i.i.d. batches); ``provenance.order`` records the seed.
    """
    if fmt not in FORMATS:
        raise ConvertError(f"unknown input format {fmt!r} (known: {', '.join(FORMATS)})")
    spec = FORMATS[fmt]
    out = Path(out)
    refuse_existing(out, overwrite)  # before reading anything
    p = spec.default_particles if max_particles is None else int(max_particles)
    if p <= 0:
        raise ConvertError(f"max_particles must be positive, got {p}")
    if not inputs:
        raise ConvertError("no input files")
    paths = [Path(x) for x in inputs]
    if out.resolve() in {x.resolve() for x in paths}:
        raise ConvertError(f"{out}: output path is one of the inputs")
    # open and check every input's layout first: a bad third file fails before any work
    sources: list[_Source] = []
    try:
        for path in paths:
            _check_hdf5(path)
            src = spec.open(path, p, label)
            sources.append(src)
            if src.nrows == 0:
                raise ConvertError(f"{path}: no rows")
        provenance = {"source": fmt, "converter": "clrdist.data.convert",
                      "converter_version": CONVERTER_VERSION, "max_particles": p, "sources": []}
        if fmt == "lhco":  # the LHC Olympics 2020 R&D sample: 13 TeV (the bump hunt reads it)
            provenance["ecm"] = 13000.0
        for src in sources:
            provenance["sources"].append({"name": src.path.name, "path": str(src.path.resolve()),
                                          "size": src.path.stat().st_size,
                                          "sha256": sha256_file(src.path), "rows": src.nrows,
                                          **src.info})
        total = sum(s.nrows for s in sources)
        with StoreWriter(out, kind=spec.kind, particle_features=spec.particle_features,
                         feature_names=spec.feature_names, label_names=spec.label_names,
                         n_particles=spec.n_slots(p), chunk_size=chunk_size,
                         shard_chunks=shard_chunks, provenance=provenance,
                         overwrite=overwrite, shuffle_seed=seed) as writer, \
                _progress(progress) as bar:
            task = bar.add_task(f"{fmt} -> {out.name}", total=total)
            for src in sources:
                rows = block_rows or max(256, _BLOCK_BYTES // max(1, src.row_bytes))
                for start, raw in iter_blocks(src, rows):
                    writer.append(*src.process(raw, start))
                    bar.advance(task, len(raw))
    finally:
        for s in sources:
            s.close()
    return out
