"""The ``lhco`` format (LHC Olympics 2020 R&D or black box; layout in
:mod:`clrdist.data.convert`): the column count checked, and every event's two leading anti-kT
jets clustered with FastJet (:func:`_cluster_dijets`): their constituents, m_jj, kinematics and
N-subjettiness ratios.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from clrdist.data.convert.common import (
    Block,
    ConvertError,
    _check_labels,
    _check_nonnegative,
    _check_values,
    _first_bad_row,
    _hardest,
    _PandasReader,
    _Source,
)
from clrdist.physics.observables import (
    import_fastjet,
    jet_kinematics,
    jet_p4,
    m_jj,
    nsubjettiness,
    p4_from_pt_eta_phi,
    tau_ratios,
)


def _cluster_dijets(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, real: np.ndarray,
                    max_particles: int, radius: float = 0.8):
    """Two leading anti-kT jets of each event; (particles (n, 2P, 3), mask, features (n, 16))."""
    # lazy: awkward (~0.3 s) only when LHCO events are clustered
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
