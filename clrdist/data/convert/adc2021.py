"""The ``adc2021`` format (CMS ADC2021; layout in :mod:`clrdist.data.convert`): the labels
(:data:`ADC_LABELS`, the generated event stores' too), the label from the file name, and the
fixed 19-slot layout checked and turned into samples and features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clrdist.data.convert.common import (
    Block,
    ConvertError,
    _check_nonnegative,
    _check_values,
    _H5Reader,
    _Source,
)

ADC_LABELS = {-1: "unknown", 0: "background", 1: "Ato4l", 2: "leptoquark", 3: "hChToTauNu",
              4: "hToTauTau"}
_ADC_FILE_LABELS = [("background", 0), ("ato4l", 1), ("leptoquark", 2), ("hchtotaunu", 3),
                    ("htotautau", 4), ("blackbox", -1)]


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
