"""Jet building blocks on numpy arrays: jet definition, anti-kT clustering, constituent packing.

No generator imports here, so converters and analyses can reuse these on any particle list.
Four-momenta are ``(n, 4) float64`` arrays ``(px, py, pz, E)`` in GeV; constituent rows stored in a
sample store are ``(pT [GeV], eta, phi)``. Kinematics and N-subjettiness live in
:mod:`clrdist.physics.observables`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from clrdist.physics.observables import import_fastjet, pt_eta_phi

__all__ = ["JetDef", "pack_constituents", "cluster_antikt"]


@dataclass(frozen=True)
class JetDef:
    """Anti-kT jet definition and kinematic selection.

    R: jet radius; pt_min / pt_max: selection window on jet pT in GeV (for dijet events: on the
    leading jet); abs_eta_max: |eta| cut on the selected jet(s).
    """

    R: float = 0.8
    pt_min: float = 550.0
    pt_max: float = 650.0
    abs_eta_max: float = 2.0

    def __post_init__(self) -> None:
        if not (0.0 < self.R <= 3.0):
            raise ValueError(f"jet radius R must be in (0, 3], got {self.R}")
        if not (0.0 <= self.pt_min < self.pt_max):
            raise ValueError(
                f"jet pT window must satisfy 0 <= pt_min < pt_max, got [{self.pt_min}, {self.pt_max}]"
            )
        if not self.abs_eta_max > 0.0:
            raise ValueError(f"abs_eta_max must be positive, got {self.abs_eta_max}")

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def pack_constituents(p4: np.ndarray, n_particles: int) -> tuple[np.ndarray, np.ndarray]:
    """Constituent four-momenta (n, 4) -> ((P, 3) float32 (pT, eta, phi) hardest first, (P,) bool mask).

    Keeps the P hardest constituents; absolute eta and phi (the jet axis lives in the features).
    """
    kin = pt_eta_phi(p4)
    order = np.argsort(-kin[:, 0], kind="stable")[:n_particles]
    out = np.zeros((n_particles, 3), dtype=np.float32)
    mask = np.zeros(n_particles, dtype=bool)
    out[: len(order)] = kin[order]
    mask[: len(order)] = True
    return out, mask


def cluster_antikt(p4: np.ndarray, R: float, pt_min: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Anti-kT clustering of one event with FastJet.

    p4: (n, 4) (px, py, pz, E) GeV. Returns [(jet p4 (4,), constituent indices into p4)] for jets
    with pT >= pt_min, hardest first.
    """
    # lazy: awkward (~0.3 s) only when clustering
    import awkward as ak

    fastjet = import_fastjet()
    p4 = np.ascontiguousarray(p4, dtype=np.float64)
    if len(p4) == 0:
        return []
    arr = ak.zip({"px": p4[:, 0], "py": p4[:, 1], "pz": p4[:, 2], "E": p4[:, 3]})
    cs = fastjet.ClusterSequence(arr, fastjet.JetDefinition(fastjet.antikt_algorithm, R))
    jets = cs.inclusive_jets(pt_min)
    idx = cs.constituent_index(pt_min)
    jp4 = np.stack([ak.to_numpy(jets[f]) for f in ("px", "py", "pz", "E")], axis=1)
    order = np.argsort(-np.hypot(jp4[:, 0], jp4[:, 1]), kind="stable")
    return [(jp4[i], np.asarray(ak.to_numpy(idx[i]), dtype=np.int64)) for i in order]
