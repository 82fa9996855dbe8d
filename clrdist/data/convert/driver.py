"""The conversion: the table of formats (:data:`FORMATS`) and :func:`convert`, which checks
every input first, records the provenance (names, sizes, sha256) and writes the inputs' blocks
into one store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clrdist.data.convert.adc2021 import ADC_LABELS, _open_adc
from clrdist.data.convert.common import ConvertError, _check_hdf5, _Source
from clrdist.data.convert.lhco import _open_lhco
from clrdist.data.convert.toptag import _open_toptag
from clrdist.data.schema import (
    ADC_FEATURES,
    JET_FEATURES,
    LHCO_FEATURES,
    PARTICLE_FEATURES,
    TOP_QCD_LABELS,
)
from clrdist.data.store import StoreWriter, refuse_existing

CONVERTER_VERSION = "1.0"
_BLOCK_BYTES = 64 << 20  # raw input bytes per block


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


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
    # lazy: rich (~70 ms) only when a progress bar is shown
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
