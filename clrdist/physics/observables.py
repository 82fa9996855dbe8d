"""Jet and event observables on numpy arrays: the one definition every part of clrdist uses.

Stores, converters, the Pythia generator, the toy generator and the evaluation baselines all
compute jet kinematics and N-subjettiness here, so a feature means the same thing whichever
path produced it.

Conventions:

- four-momenta are ``(..., 4) float64`` ``(px, py, pz, E)`` in GeV;
- constituent tables are padded ``(J, M)`` arrays ``pt`` [GeV], ``eta``, ``phi`` with a
  ``(J, M) bool`` mask of real entries (the store's ``particles[..., :3]`` and ``mask``);
  constituents given this way are massless, so their rapidity is eta; padding may hold anything;
- phi differences are wrapped into [-pi, pi).

N-subjettiness (Thaler, Van Tilburg, arXiv:1011.2268), beta = 1, with exclusive-kT axes: the
jet's constituents are reclustered with the kT algorithm (R = FastJet's maximal R, so nothing
merges with the beam) and stopped at exactly N subjets; then

    tau_N = sum_i pT_i min_a dR(i, a) / (R0 sum_i pT_i),      dR in (rapidity, phi)

with R0 the jet radius. A jet with at most N constituents has tau_N = 0 (every constituent is
its own axis). The axes are not the tau-minimising ones, so tau_{N+1} < tau_N holds for almost
every jet, not for all. One kT clustering per jet serves every N.

Energy flow polynomials (Komiske, Metodiev, Thaler, arXiv:1712.07124) come from energyflow.

FastJet, awkward and energyflow are imported inside the functions that need them.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "wrap_phi",
    "delta_phi",
    "delta_r",
    "rapidity",
    "pt_eta_phi",
    "p4_from_pt_eta_phi",
    "invariant_mass",
    "jet_kinematics",
    "jet_p4",
    "jet_mass",
    "m_jj",
    "nsubjettiness",
    "nsubjettiness_of_p4",
    "tau_ratios",
    "efps",
    "import_fastjet",
    "import_energyflow",
]


# --- angles ---------------------------------------------------------------------------------

def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(phi) + np.pi) % (2.0 * np.pi) - np.pi


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b wrapped into [-pi, pi)."""
    return wrap_phi(np.asarray(a) - np.asarray(b))


def delta_r(eta1: np.ndarray, phi1: np.ndarray, eta2: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """Angular distance sqrt(d_eta^2 + d_phi^2), d_phi wrapped; broadcasts (eta may be rapidity)."""
    return np.sqrt((np.asarray(eta1) - np.asarray(eta2)) ** 2 + delta_phi(phi1, phi2) ** 2)


# --- four-momenta ---------------------------------------------------------------------------

def rapidity(p4: np.ndarray) -> np.ndarray:
    """(..., 4) -> (...) rapidity 0.5 ln((E + pz) / (E - pz)); 0 for a zero vector, +-10 along
    the beam."""
    p4 = np.asarray(p4, dtype=np.float64)
    e, pz = p4[..., 3], p4[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log((e + pz) / (e - pz))
    return np.nan_to_num(y, nan=0.0, posinf=10.0, neginf=-10.0)


def pt_eta_phi(p4: np.ndarray) -> np.ndarray:
    """(..., 4) (px, py, pz, E) -> (..., 3) (pT [GeV], eta, phi); eta = 0 where pT = 0."""
    p4 = np.asarray(p4, dtype=np.float64)
    px, py, pz = p4[..., 0], p4[..., 1], p4[..., 2]
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, 0.0))
    return np.stack([pt, eta, np.arctan2(py, px)], axis=-1)


def p4_from_pt_eta_phi(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                       mass: np.ndarray | float = 0.0) -> np.ndarray:
    """(pT [GeV], eta, phi[, mass GeV]) of any shape -> (..., 4) (px, py, pz, E); inverse of
    :func:`pt_eta_phi`. |p| = pT cosh(eta), so massless particles get E = pT cosh(eta) exactly."""
    pt, eta, phi = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi))
    p = pt * np.cosh(eta)
    e = np.sqrt(p**2 + np.asarray(mass, dtype=np.float64) ** 2)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e], axis=-1)


def invariant_mass(p4: np.ndarray) -> np.ndarray:
    """(..., 4) -> (...) sqrt(E^2 - |p|^2) in GeV, 0 where rounding makes it negative."""
    p4 = np.asarray(p4, dtype=np.float64)
    m2 = p4[..., 3] ** 2 - p4[..., 0] ** 2 - p4[..., 1] ** 2 - p4[..., 2] ** 2
    return np.sqrt(np.maximum(m2, 0.0))


def jet_kinematics(p4: np.ndarray) -> np.ndarray:
    """Jet four-momenta (n, 4) (or one (4,)) -> (n, 4) (pT [GeV], eta, phi, mass [GeV])."""
    p4 = np.atleast_2d(np.asarray(p4, dtype=np.float64))
    return np.concatenate([pt_eta_phi(p4), invariant_mass(p4)[..., None]], axis=-1)


def jet_p4(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Four-momentum (J, 4) of each jet: the sum of its real, massless constituents (J, M)."""
    mask = np.asarray(mask, dtype=bool)
    pt = np.where(mask, np.asarray(pt, dtype=np.float64), 0.0)
    eta = np.where(mask, np.asarray(eta, dtype=np.float64), 0.0)  # padding may hold anything
    phi = np.asarray(phi, dtype=np.float64)
    parts = (pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta))
    return np.stack([c.sum(axis=-1) for c in parts], axis=-1)


def jet_mass(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Invariant mass (J,) in GeV of each jet's real, massless constituents (J, M)."""
    return invariant_mass(jet_p4(pt, eta, phi, mask))


def m_jj(p4_j1: np.ndarray, p4_j2: np.ndarray) -> np.ndarray:
    """Dijet invariant mass (...) in GeV of two jet four-momenta (..., 4); a missing jet is a
    zero four-vector (m_jj is then the mass of the other)."""
    return invariant_mass(np.asarray(p4_j1, dtype=np.float64) + np.asarray(p4_j2, dtype=np.float64))


# --- N-subjettiness -------------------------------------------------------------------------

def nsubjettiness(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, valid: np.ndarray, *,
                  r0: float, n_max: int = 3) -> np.ndarray:
    """tau_1 .. tau_n_max (J, n_max) float64 of jets given as padded constituent tables.

    pt [GeV], eta, phi, valid: (J, M); constituents are massless (rapidity = eta). r0: the jet
    radius. Definition in the module docstring.
    """
    valid = np.asarray(valid, dtype=bool)
    pt = np.where(valid, np.asarray(pt, dtype=np.float64), 0.0)
    eta = np.where(valid, np.asarray(eta, dtype=np.float64), 0.0)
    phi = np.asarray(phi, dtype=np.float64)
    return _nsubjettiness(p4_from_pt_eta_phi(pt, eta, phi), pt, eta, phi, valid, r0, n_max)


def nsubjettiness_of_p4(constituents: Sequence[np.ndarray], *, r0: float,
                        n_max: int = 3) -> np.ndarray:
    """tau_1 .. tau_n_max (J, n_max) float64 of jets given as one (n_i, 4) (px, py, pz, E)
    array of constituents each (masses allowed: distances use the true rapidity)."""
    counts = np.array([len(c) for c in constituents], dtype=np.int64)
    width = int(counts.max()) if len(counts) else 0
    p4 = np.zeros((len(counts), width, 4), dtype=np.float64)
    valid = np.arange(width)[None, :] < counts[:, None]
    if len(counts):
        p4[valid] = np.concatenate(constituents).astype(np.float64)
    kin = pt_eta_phi(p4)
    return _nsubjettiness(p4, kin[..., 0], rapidity(p4), kin[..., 2], valid, r0, n_max)


def _nsubjettiness(p4: np.ndarray, pt: np.ndarray, y: np.ndarray, phi: np.ndarray,
                   valid: np.ndarray, r0: float, n_max: int) -> np.ndarray:
    """Shared core: p4 (J, M, 4) to cluster, pt / y / phi (J, M) for the sums, valid (J, M)."""
    n_jets = len(valid)
    taus = np.zeros((n_jets, n_max), dtype=np.float64)
    if n_jets == 0:
        return taus
    # lazy: awkward (~0.3 s) only when clustering
    import awkward as ak

    fastjet = import_fastjet()
    counts = valid.sum(axis=1)
    norm = (pt * valid).sum(axis=1) * r0
    jetdef = fastjet.JetDefinition(fastjet.kt_algorithm, fastjet.JetDefinition.max_allowable_R)
    # one kT clustering per jet serves every N; exclusive_jets(N) needs >= N constituents in
    # every jet of the batch, so jets with 2..n_max constituents are clustered in their own
    # batches (for N below their multiplicity; above it tau_N = 0 stays)
    groups = [(np.flatnonzero(counts > n_max), range(1, n_max + 1))]
    groups += [(np.flatnonzero(counts == c), range(1, c)) for c in range(2, n_max + 1)]
    for sel, ns in groups:
        if len(sel) == 0 or len(ns) == 0:
            continue
        v = valid[sel]
        flat = p4[sel][v]  # real constituents, jet by jet
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
            dr = delta_r(y[sel][:, :, None], phi[sel][:, :, None],
                         rapidity(ax)[:, None, :], np.arctan2(ax[..., 1], ax[..., 0])[:, None, :])
            taus[sel, n - 1] = (pt[sel] * dr.min(axis=2) * v).sum(axis=1) / norm[sel]
    return taus


def tau_ratios(taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., >=3) tau_1..3 -> (tau21, tau32), each (...); 0 where the denominator is 0."""
    taus = np.asarray(taus, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t21 = np.where(taus[..., 0] > 0, taus[..., 1] / taus[..., 0], 0.0)
        t32 = np.where(taus[..., 1] > 0, taus[..., 2] / taus[..., 1], 0.0)
    return t21, t32


# --- energy flow polynomials ------------------------------------------------------------------

def efps(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray, *,
         dmax: int = 5) -> np.ndarray:
    """All EFPs with degree <= dmax (J, n_efp; 102 for dmax = 5) of jets given as padded massless
    constituent tables (J, M): hadronic measure (z_i = pT_i / sum pT, theta_ij = dR in
    (rapidity, phi)), beta = 1, normalised energies. energyflow loops over jets in Python."""
    ef = import_energyflow()
    efpset = ef.EFPSet(f"d<={dmax}", measure="hadr", beta=1, normed=True, coords="ptyphim")
    p = np.stack([np.asarray(x, dtype=np.float64) for x in (pt, eta, phi)], axis=-1)
    mask = np.asarray(mask, dtype=bool)
    return np.asarray(efpset.batch_compute([p[i][mask[i]] for i in range(len(p))], n_jobs=1),
                      dtype=np.float64)


def import_energyflow():
    """Import energyflow. Its EMD module imports ``wasserstein``, whose binary wheels before 1.1
    are built against numpy 1.x and fail to load under numpy 2. EFPs do not need it: in that
    case a stub ``wasserstein`` module is registered first (energyflow's EMDs are then
    unavailable in this process)."""
    if "energyflow" not in sys.modules and "wasserstein" not in sys.modules:
        # lazy: importlib.metadata (~40 ms) only before energyflow's first import
        from importlib.metadata import PackageNotFoundError, version

        try:
            w_major_minor = tuple(int(v) for v in version("wasserstein").split(".")[:2])
        except (PackageNotFoundError, ValueError):
            w_major_minor = (99, 0)
        if int(np.__version__.split(".")[0]) >= 2 and w_major_minor < (1, 1):
            sys.modules["wasserstein"] = types.ModuleType("wasserstein")
    # lazy: energyflow (~0.3 s) only for EFPs
    import energyflow

    return energyflow


# --- FastJet ----------------------------------------------------------------------------------

_BANNER_SILENCED = False


def import_fastjet():
    """Import the ``fastjet`` package with its 13-line banner (printed to C stdout on first use)
    sent to /dev/null."""
    global _BANNER_SILENCED
    # lazy: fastjet (~0.2 s) only when clustering
    import fastjet

    if _BANNER_SILENCED:
        return fastjet

    # lazy: awkward (~0.3 s) only when clustering
    import awkward as ak

    _BANNER_SILENCED = True
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        one = ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 1.0}]])
        fastjet.ClusterSequence(one, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)).inclusive_jets()
        ctypes.CDLL(None).fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    return fastjet
