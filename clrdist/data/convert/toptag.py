"""The ``toptag`` format (the top tagging reference dataset; layout in
:mod:`clrdist.data.convert`): the table's columns checked, and a block of rows -> jets (the
P hardest constituents, jet kinematics from all of them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clrdist.data.convert.common import (
    Block,
    ConvertError,
    _check_labels,
    _check_nonnegative,
    _check_values,
    _hardest,
    _PandasReader,
    _Source,
)
from clrdist.physics.observables import jet_kinematics, pt_eta_phi


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
