"""One shard: Pythia events -> jets -> selection -> the shard's arrays (runs inside a Ray task;
no Ray here).

Jets come from the clustering back-ends of :mod:`clrdist.data.generation.pythia` (the only
module that imports pythia8mc). Constituents are stored as (pT, eta, phi), hardest first, up to
``n_particles``; features are named in :mod:`clrdist.data.schema` (N-subjettiness with
exclusive-kT axes). This module owns the jet and dijet shards: the event loop of
:func:`generate_shard`, the selection (pT window, |eta|, truth matching), the invisible-momentum
features and the shard's arrays. Event stores (the ADC2021 processes) are
:mod:`clrdist.data.generation.event_store`'s; :func:`generate_shard` hands them over, and the
names of both modules stay importable from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from clrdist.data.generation.event_store import (
    ISOLATION_DR,
    ISOLATION_MAX,
    N_EVENT_SLOTS,
    event_features,
    event_objects,
    generate_event_shard,
)
from clrdist.data.generation.plan import GenerationError, ShardSpec
from clrdist.data.generation.pythia import (
    PARTICLE_ETA_MAX,
    CalorimeterJets,
    FjcoreJets,
    _next_event,
    _Stats,
    make_pythia,
)
from clrdist.data.jets import JetDef, pack_constituents
from clrdist.data.schema import (
    GENERATED_DIJET_FEATURES,
    JET_FEATURES,
    NSUBJETTINESS_FEATURES,
)
from clrdist.physics.observables import (
    delta_r,
    jet_kinematics,
    m_jj,
    nsubjettiness_of_p4,
    pt_eta_phi,
    tau_ratios,
)

__all__ = [
    "ISOLATION_DR",
    "ISOLATION_MAX",
    "N_EVENT_SLOTS",
    "PARTICLE_ETA_MAX",
    "CalorimeterJets",
    "FjcoreJets",
    "event_features",
    "event_objects",
    "generate_event_shard",
    "generate_shard",
    "make_pythia",
]

# dijet feature name prefix -> per-jet column (e.g. m_J1 is the leading jet's jet_mass)
_DIJET_QUANTITY = {"m": "jet_mass", "pt": "jet_pt", "eta": "jet_eta", "phi": "jet_phi",
                   "n": "n_constituents"}


# --- truth matching and invisible momentum ----------------------------------------------------


def _truth_axes(process: str, proc) -> list[list[tuple[float, float]]]:
    """Per truth object, the (eta, phi) of the directions a matched jet must contain.

    top: [top, b, q, q'] for each top; w: [W, q, q'] for each W; svj: [dark quark] for each
    outgoing dark quark.
    """
    groups: list[list[tuple[float, float]]] = []
    if process == "top":
        for i in range(proc.size()):
            t = proc[i]
            if t.idAbs() != 6:
                continue
            dirs = [(t.eta(), t.phi())]
            for d in t.daughterList():
                q = proc[d]
                if q.idAbs() == 24:
                    dirs += [(proc[k].eta(), proc[k].phi()) for k in q.daughterList()]
                elif q.idAbs() != 6:
                    dirs.append((q.eta(), q.phi()))
            groups.append(dirs)
    elif process == "w":
        for i in range(proc.size()):
            w = proc[i]
            if w.idAbs() == 24 and w.daughterList():
                groups.append([(w.eta(), w.phi())]
                              + [(proc[k].eta(), proc[k].phi()) for k in w.daughterList()])
    elif process == "svj":
        for i in range(proc.size()):
            q = proc[i]
            if q.idAbs() == 4900101 and q.status() == 23:
                groups.append([(q.eta(), q.phi())])
    return groups


def _matched(eta: float, phi: float, groups, R: float) -> bool:
    return any(all(delta_r(eta, phi, e, p) < R for e, p in g) for g in groups)


def _invisible_p4(event) -> np.ndarray:
    """(n, 4) float64 four-momenta of the event's invisible final particles."""
    return np.array(
        [(q.px(), q.py(), q.pz(), q.e()) for q in event if q.isFinal() and not q.isVisible()],
        dtype=np.float64,
    ).reshape(-1, 4)


def _invisible_features(invisible: np.ndarray, jet_p4: np.ndarray, R: float) -> tuple[float, float]:
    """(event MET, truth invisible pT fraction in the jet cone) from the invisible final particles."""
    if len(invisible) == 0:
        return 0.0, 0.0
    met = float(np.hypot(invisible[:, 0].sum(), invisible[:, 1].sum()))
    pt, eta, phi = pt_eta_phi(invisible).T
    jk = jet_kinematics(jet_p4)[0]
    in_cone = (pt > 0) & (delta_r(eta, phi, jk[1], jk[2]) < R)
    inv = invisible[in_cone].sum(axis=0)
    pt_inv = math.hypot(inv[0], inv[1])
    tot = inv + jet_p4
    pt_tot = math.hypot(tot[0], tot[1])
    return met, (pt_inv / pt_tot if pt_tot > 0 else 0.0)


# --- the shard --------------------------------------------------------------------------------


def generate_shard(spec: ShardSpec, on_accept: Callable[[int], None] | None = None) -> dict:
    """Generate one shard: exactly ``spec.n`` accepted jets (or dijet events).

    on_accept(k) is called with the number of newly accepted samples every ~5% of the shard
    (progress reporting). Returns {"particles": (n, P', 3) float32, "mask": (n, P') bool,
    "features": (n, K) float32, "stats": {...}} with P' = P for jet stores and 2P for dijet
    stores.
    """
    if spec.kind == "event":
        return generate_event_shard(spec, on_accept)
    # --- set up: Pythia, the clustering back-end, limits ------------------------------------
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    st = _Stats()
    pythia = make_pythia(spec)
    st.t_init = time.perf_counter() - t_start
    jet = spec.jet
    dijet = spec.kind == "dijet"
    # jets below half the window cannot enter it; dijet stores need the subleading jet too
    pt_floor = 20.0 if dijet else 0.5 * jet.pt_min
    jets = (FjcoreJets(jet.R, pt_floor) if spec.detector is None
            else CalorimeterJets(spec.detector, spec.detector_seed, jet.R, pt_floor))
    max_events = spec.max_events or (10_000 + 1000 * spec.n)
    max_failed = 100 + spec.n

    # --- events until the shard is full -------------------------------------------------------
    cons_list: list[np.ndarray] = []  # jet stores: one (n_i, 4) per jet; dijet: two per event
    extra: list[tuple[float, float]] = []  # (met, inv_frac) per jet
    n_acc = n_reported = 0
    report_every = max(1, spec.n // 20)
    while n_acc < spec.n:
        if on_accept is not None and n_acc - n_reported >= report_every:
            on_accept(n_acc - n_reported)
            n_reported = n_acc
        if st.n_events >= max_events:
            raise GenerationError(
                f"process {spec.process!r}: only {n_acc} of {spec.n} {'events' if dijet else 'jets'} "
                f"accepted after {st.n_events} events; the selection (R={jet.R}, pT in "
                f"[{jet.pt_min:g}, {jet.pt_max:g}] GeV, |eta| < {jet.abs_eta_max:g}) is too tight "
                "for this process"
            )
        if not _next_event(pythia, st, spec.pythia_process, max_failed):
            continue
        st.n_events += 1
        ev = pythia.event
        cands = jets.cluster(ev)
        if dijet:
            if _dijet_passes(cands, jet):
                cons_list += [jets.constituents(0), jets.constituents(1)]
                n_acc += 1
            continue
        keep = _selected_jets(cands, spec, pythia)
        invisible = None
        if spec.want_invisible and keep:
            invisible = jets.invisible if jets.invisible is not None else _invisible_p4(ev)
        for j in keep[: spec.n - n_acc]:
            cons = jets.constituents(j)
            cons_list.append(cons)
            if spec.want_invisible:
                extra.append(_invisible_features(invisible, cons.sum(axis=0), jet.R))
            n_acc += 1

    if on_accept is not None and n_acc > n_reported:
        on_accept(n_acc - n_reported)

    # --- arrays -----------------------------------------------------------------------------
    t_post = time.perf_counter()
    parts, mask, features = _shard_arrays(cons_list, extra, spec)
    t_total = time.perf_counter() - t_start
    return {
        "particles": parts,
        "mask": mask,
        "features": features,
        "stats": {
            "t_init": st.t_init,
            "t_next": st.t_next,
            "t_post": time.perf_counter() - t_post,
            "t_total": t_total,
            "t_cpu": time.process_time() - cpu_start,
            "n_events": st.n_events,
            "n_failed": st.n_failed,
            "n_accepted": spec.n,
        },
    }


def _dijet_passes(cands: list[tuple[float, float, float]], jet: JetDef) -> bool:
    """Dijet selection: two jets, the leading one in the pT window, both within |eta|."""
    if len(cands) < 2:
        return False
    (pt1, eta1, _), (_, eta2, _) = cands
    return jet.pt_min <= pt1 <= jet.pt_max and max(abs(eta1), abs(eta2)) < jet.abs_eta_max


def _selected_jets(cands: list[tuple[float, float, float]], spec: ShardSpec, pythia) -> list[int]:
    """Indices of the candidate jets in the pT window and |eta| cut (and, with truth matching,
    containing their top's or W's decay products or a dark quark), hardest first."""
    jet = spec.jet
    keep = [j for j, (pt, eta, _) in enumerate(cands)
            if jet.pt_min <= pt <= jet.pt_max and abs(eta) < jet.abs_eta_max]
    if keep and spec.match_truth:
        groups = _truth_axes(spec.process, pythia.process)
        keep = [j for j in keep if _matched(cands[j][1], cands[j][2], groups, jet.R)]
    return keep


def _shard_arrays(cons_list: list[np.ndarray], extra: list[tuple[float, float]],
                  spec: ShardSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(particles (n, P', 3) float32, mask (n, P') bool, features (n, K) float32) of the accepted
    jets' constituents (dijet stores: two consecutive entries per event)."""
    taus = nsubjettiness_of_p4(cons_list, r0=spec.jet.R, n_max=3)
    t21, t32 = tau_ratios(taus)
    jet_p4 = np.stack([c.sum(axis=0) for c in cons_list])
    kin = jet_kinematics(jet_p4)
    n_const = np.array([len(c) for c in cons_list], dtype=np.float64)
    # one column per jet, named as in the store (schema.JET_FEATURES, NSUBJETTINESS_FEATURES)
    cols = {"jet_pt": kin[:, 0], "jet_eta": kin[:, 1], "jet_phi": kin[:, 2], "jet_mass": kin[:, 3],
            "n_constituents": n_const, "tau1": taus[:, 0], "tau2": taus[:, 1], "tau3": taus[:, 2],
            "tau21": t21, "tau32": t32}
    packed = [pack_constituents(c, spec.n_particles) for c in cons_list]
    parts = np.stack([p for p, _ in packed])
    mask = np.stack([m for _, m in packed])
    if spec.kind == "dijet":
        n = spec.n
        parts = parts.reshape(n, 2 * spec.n_particles, 3)
        mask = mask.reshape(n, 2 * spec.n_particles)
        pairs = jet_p4.reshape(n, 2, 4)
        cols["m_jj"] = np.repeat(m_jj(pairs[:, 0], pairs[:, 1]), 2)  # per jet, both rows alike
        features = np.stack([_dijet_column(cols, name) for name in GENERATED_DIJET_FEATURES],
                            axis=1)
    else:
        features = np.stack([cols[k] for k in (*JET_FEATURES, *NSUBJETTINESS_FEATURES)], axis=1)
        if spec.want_invisible:  # schema.SVJ_FEATURES: met, inv_frac
            features = np.concatenate([features, np.array(extra, dtype=np.float64)], axis=1)
    return parts.astype(np.float32), mask, features.astype(np.float32)


def _dijet_column(cols: dict[str, np.ndarray], name: str) -> np.ndarray:
    """One dijet feature column from per-jet columns (rows: J1, J2, J1, J2, ...)."""
    if name == "m_jj":
        return cols["m_jj"][0::2]
    quantity, which = name.rsplit("_", 1)  # e.g. "tau21", "J1"
    column = cols[_DIJET_QUANTITY.get(quantity, quantity)]
    return column[0::2] if which == "J1" else column[1::2]
