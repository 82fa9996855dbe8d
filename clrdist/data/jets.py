"""Jet building blocks on numpy arrays: kinematics, constituent packing, clustering, N-subjettiness.

No generator imports here, so converters and analyses can reuse these on any particle list.
Four-momenta are ``(n, 4) float64`` arrays ``(px, py, pz, E)`` in GeV; constituent rows stored in a
sample store are ``(pT [GeV], eta, phi)``.

N-subjettiness (Thaler, Van Tilburg, arXiv:1011.2268) uses exclusive-kT axes: the jet's constituents
are reclustered with the kT algorithm (R = FastJet's maximal R, so nothing merges with the beam)
and stopped at exactly N subjets; then

    tau_N = sum_i pT_i * min_a dR(i, a) / (sum_i pT_i * R0),      dR in (rapidity, phi)

with R0 the jet radius. The reclustering runs in FastJet (one vectorised call per N for a whole
batch of jets); the sums are numpy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "JetDef",
    "pt_eta_phi",
    "p4_from_pt_eta_phi",
    "jet_kinematics",
    "delta_phi",
    "pack_constituents",
    "cluster_antikt",
    "nsubjettiness",
    "tau_ratios",
]


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


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b wrapped into [-pi, pi)."""
    return (np.asarray(a) - np.asarray(b) + np.pi) % (2.0 * np.pi) - np.pi


def pt_eta_phi(p4: np.ndarray) -> np.ndarray:
    """(n, 4) (px, py, pz, E) -> (n, 3) (pT, eta, phi). Pseudorapidity is finite for pT > 0."""
    p4 = np.asarray(p4, dtype=np.float64)
    px, py, pz = p4[:, 0], p4[:, 1], p4[:, 2]
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, 0.0))
    phi = np.arctan2(py, px)
    return np.stack([pt, eta, phi], axis=1)


def p4_from_pt_eta_phi(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                       mass: np.ndarray | float = 0.0) -> np.ndarray:
    """(pT [GeV], eta, phi[, mass]) of n particles -> (n, 4) (px, py, pz, E); inverse of pt_eta_phi."""
    pt, eta, phi = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + np.asarray(mass, dtype=np.float64) ** 2)
    return np.stack([px, py, pz, e], axis=-1)


def _rapidity(p4: np.ndarray) -> np.ndarray:
    e, pz = p4[..., 3], p4[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log((e + pz) / (e - pz))
    return np.nan_to_num(y, nan=0.0, posinf=10.0, neginf=-10.0)


def jet_kinematics(p4: np.ndarray) -> np.ndarray:
    """(n, 4) jet four-momenta -> (n, 4) (pT, eta, phi, mass) in GeV."""
    p4 = np.atleast_2d(np.asarray(p4, dtype=np.float64))
    kin = pt_eta_phi(p4)
    m2 = p4[:, 3] ** 2 - (p4[:, :3] ** 2).sum(axis=1)
    mass = np.sqrt(np.clip(m2, 0.0, None))
    return np.concatenate([kin, mass[:, None]], axis=1)


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


def _fastjet():
    import fastjet  # noqa: PLC0415 (import cost and its banner only when clustering is needed)

    return fastjet


def cluster_antikt(p4: np.ndarray, R: float, pt_min: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Anti-kT clustering of one event with FastJet.

    p4: (n, 4) (px, py, pz, E) GeV. Returns [(jet p4 (4,), constituent indices into p4)] for jets
    with pT >= pt_min, hardest first.
    """
    import awkward as ak  # noqa: PLC0415

    fastjet = _fastjet()
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


def nsubjettiness(constituents: Sequence[np.ndarray], R0: float, n_max: int = 3) -> np.ndarray:
    """tau_1 .. tau_n_max of each jet with exclusive-kT axes.

    constituents: one (n_i, 4) (px, py, pz, E) array per jet. Returns (J, n_max) float64. A jet
    with at most N constituents has tau_N = 0 (each constituent is its own axis).
    """
    import awkward as ak  # noqa: PLC0415

    n_jets = len(constituents)
    taus = np.zeros((n_jets, n_max), dtype=np.float64)
    if n_jets == 0:
        return taus
    counts = np.array([len(c) for c in constituents], dtype=np.int64)
    width = int(counts.max())
    # padded (J, M) arrays for the numpy sums
    p4 = np.zeros((n_jets, width, 4), dtype=np.float64)
    valid = np.arange(width)[None, :] < counts[:, None]
    p4[valid] = np.concatenate(constituents).astype(np.float64)
    pt = np.hypot(p4[..., 0], p4[..., 1])
    y = _rapidity(p4)
    phi = np.arctan2(p4[..., 1], p4[..., 0])
    norm = pt.sum(axis=1) * R0

    fastjet = _fastjet()
    jetdef = fastjet.JetDefinition(fastjet.kt_algorithm, fastjet.JetDefinition.max_allowable_R)
    # one kT clustering per jet serves every N; jets with fewer constituents than n_max + 1
    # (rare) are clustered again per N because exclusive_jets(N) needs >= N constituents
    groups = [(np.flatnonzero(counts > n_max), range(1, n_max + 1))]
    groups += [(np.flatnonzero(counts == c), range(1, c)) for c in range(2, n_max + 1)]
    for sel, ns in groups:
        if len(sel) == 0 or len(ns) == 0:
            continue
        flat = np.concatenate([constituents[i] for i in sel]).astype(np.float64)
        arr = ak.unflatten(
            ak.zip({"px": flat[:, 0], "py": flat[:, 1], "pz": flat[:, 2], "E": flat[:, 3]}),
            counts[sel],
        )
        cs = fastjet.ClusterSequence(arr, jetdef)
        for n in ns:
            with warnings.catch_warnings():
                # fastjet's awkward interface warns about exclusive jets for any algorithm
                warnings.filterwarnings("ignore", message="dcut and exclusive jets")
                axes = cs.exclusive_jets(n_jets=n)
            ax = np.stack(
                [ak.to_numpy(ak.flatten(axes[f])).reshape(len(sel), n) for f in ("px", "py", "pz", "E")],
                axis=-1,
            )  # (J_sel, n, 4)
            ay = _rapidity(ax)
            aphi = np.arctan2(ax[..., 1], ax[..., 0])
            dr2 = (y[sel][:, :, None] - ay[:, None, :]) ** 2 + delta_phi(
                phi[sel][:, :, None], aphi[:, None, :]
            ) ** 2  # (J_sel, M, n)
            dmin = np.sqrt(dr2.min(axis=2))
            taus[sel, n - 1] = (pt[sel] * dmin * valid[sel]).sum(axis=1) / norm[sel]
    return taus


def tau_ratios(taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J, 3) tau_1..3 -> (tau21, tau32); 0 where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t21 = np.where(taus[:, 0] > 0, taus[:, 1] / taus[:, 0], 0.0)
        t32 = np.where(taus[:, 1] > 0, taus[:, 2] / taus[:, 1], 0.0)
    return t21, t32
