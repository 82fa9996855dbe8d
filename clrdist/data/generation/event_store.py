"""One shard of an event store (the ADC2021 processes, :func:`generate_event_shard`).

Every event's isolated electrons and muons, anti-kT R = 0.4 jets of the remaining visible
particles and the missing pT, in the ADC2021 layout (MET, 4 e, 4 mu, 10 jets; (pT, eta, phi)
per slot); events without a trigger lepton are skipped. This module owns the objects
(:func:`event_objects`), the event features (:func:`event_features`) and the shard's event
loop; Pythia is driven through :mod:`clrdist.data.generation.pythia`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from clrdist.data.detector import DETECTORS
from clrdist.data.generation.plan import GenerationError, ShardSpec
from clrdist.data.generation.processes import ADC_OBJECTS, ADC_PROCESS_IDS, ADC_TRIGGER_PT
from clrdist.data.generation.pythia import PARTICLE_ETA_MAX, _next_event, _Stats, make_pythia
from clrdist.data.jets import JetDef
from clrdist.physics.observables import delta_r, import_fastjet, pt_eta_phi

# lepton isolation: scalar pT sum of the other visible particles (pT > 0.5 GeV) within
# dR < 0.3, relative to the lepton's pT, below ISOLATION_MAX. Loose on purpose: Delphes' CMS
# values (electrons 0.12, muons 0.25) keep 0.13% / 0.4% of the heavy-flavour QCD events with a
# 23 GeV lepton (1500 events, pT-hat > 30 GeV, forced semileptonic decays) and would make the
# QCD share of the mix cost hours of CPU; at 1.0, 2.9% pass (no isolation: 4.3%), and leptons
# deep inside jets still fail. docs/events.md has the numbers.
ISOLATION_DR = 0.3
ISOLATION_MAX = {11: 1.0, 13: 1.0}
_ISO_TRACK_PT = 0.5
N_EVENT_SLOTS = 19  # MET, 4 electrons, 4 muons, 10 jets


def _final_particles(event) -> np.ndarray:
    """(n, 6) float64 of the event's final particles: px, py, pz, E, id, visible (0/1)."""
    rows = [(q.px(), q.py(), q.pz(), q.e(), q.id(), q.isVisible()) for q in event if q.isFinal()]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _isolated_leptons(p4: np.ndarray, pid: np.ndarray, visible: np.ndarray) -> dict[int, np.ndarray]:
    """{11: indices, 13: indices} of the electrons / muons in their acceptance and isolated
    (:data:`ISOLATION_MAX`), hardest first; index into p4."""
    pt, eta, phi = pt_eta_phi(p4).T
    apid = np.abs(pid)
    track = visible & (pt > _ISO_TRACK_PT)
    out = {}
    for lid, obj in ((11, ADC_OBJECTS["electron"]), (13, ADC_OBJECTS["muon"])):
        cand = np.flatnonzero((apid == lid) & (pt > obj["pt_min"])
                              & (np.abs(eta) < obj["abs_eta_max"]))
        keep = []
        for i in cand:
            near = track & (delta_r(eta, phi, eta[i], phi[i]) < ISOLATION_DR)
            near[i] = False
            if pt[near].sum() < ISOLATION_MAX[lid] * pt[i]:
                keep.append(i)
        keep_a = np.array(keep, dtype=np.int64)
        out[lid] = keep_a[np.argsort(-pt[keep_a], kind="stable")]
    return out


def _met_row(px: float, py: float) -> tuple[float, float, float]:
    return (math.hypot(px, py), 0.0, math.atan2(py, px))


def event_objects(parts: np.ndarray, jet: JetDef, detector, rng: np.random.Generator | None
                  ) -> np.ndarray | None:
    """One event's (19, 3) ADC2021 slots (pT, eta, phi; empty slots zero), None when it fails
    the single-lepton trigger; ``parts`` is :func:`_final_particles`' array, ``jet`` the jets'
    anti-kT radius and selection (pT > pt_min, |eta| < abs_eta_max; up to 10 kept).

    Particle level (``detector`` None): isolated leptons as generated, jets of the other visible
    particles within |eta| < 5, MET the invisible particles' pT sum. With a detector: leptons
    smeared (:meth:`SimpleCalorimeter.smear_leptons`), jets of calorimeter cells of the visible
    particles except the selected electrons and all muons, MET minus the sum of cells, smeared
    electrons and muons in their acceptance.
    """
    p4, pid, visible = parts[:, :4], parts[:, 4].astype(np.int64), parts[:, 5] > 0
    eta_all = pt_eta_phi(p4)[:, 1]
    in_reach = np.abs(eta_all) < PARTICLE_ETA_MAX
    leptons = _isolated_leptons(p4, pid, visible & in_reach)
    rows = np.zeros((N_EVENT_SLOTS, 3), dtype=np.float64)
    lep_kin = {}
    for lid in (11, 13):
        kin = pt_eta_phi(p4[leptons[lid]])
        if detector is not None and len(kin):
            kin = detector.smear_leptons(kin, lid, rng)
        order = np.argsort(-kin[:, 0], kind="stable")
        lep_kin[lid] = kin[order]
    trigger = any(len(k) and k[:, 0].max() > ADC_TRIGGER_PT for k in lep_kin.values())
    if not trigger:
        return None
    selected = np.zeros(len(p4), dtype=bool)
    selected[leptons[11]] = True
    selected[leptons[13]] = True
    if detector is None:
        jet_in = p4[visible & in_reach & ~selected]
        inv = p4[~visible].sum(axis=0) if (~visible).any() else np.zeros(4)
        met = _met_row(inv[0], inv[1])
    else:
        muon = visible & (np.abs(pid) == 13)
        jet_in = detector(p4[visible & ~selected & ~muon], pid[visible & ~selected & ~muon], rng)
        lep_p4 = [_p4_from_kin(lep_kin[11])]
        mu_all = pt_eta_phi(p4[muon & ~selected])
        mu_all = mu_all[np.abs(mu_all[:, 1]) < ADC_OBJECTS["muon"]["abs_eta_max"]]
        lep_p4 += [_p4_from_kin(lep_kin[13]), _p4_from_kin(mu_all)]
        vis = jet_in[:, :2].sum(axis=0) + sum(x[:, :2].sum(axis=0) for x in lep_p4)
        met = _met_row(-vis[0], -vis[1])
    jet_kin = _antikt_kinematics(jet_in, jet.R, jet.pt_min)
    jet_kin = jet_kin[(jet_kin[:, 0] > jet.pt_min) & (jet_kin[:, 0] <= jet.pt_max)
                      & (np.abs(jet_kin[:, 1]) < jet.abs_eta_max)]
    rows[0] = met
    e, mu = lep_kin[11][: ADC_OBJECTS["electron"]["n"]], lep_kin[13][: ADC_OBJECTS["muon"]["n"]]
    rows[1:1 + len(e)] = e
    rows[5:5 + len(mu)] = mu
    jk = jet_kin[: ADC_OBJECTS["jet"]["n"]]
    rows[9:9 + len(jk)] = jk
    return rows


def _antikt_kinematics(p4: np.ndarray, R: float, pt_min: float) -> np.ndarray:
    """(n_jets, 3) (pT, eta, phi) of the anti-kT jets of ``p4`` (n, 4) above ``pt_min``,
    hardest first: fastjet's PseudoJet interface (per event several times faster than the
    awkward-array one of :func:`clrdist.data.jets.cluster_antikt` on ~300 particles)."""
    if len(p4) == 0:
        return np.zeros((0, 3))
    fastjet = import_fastjet()
    pjs = [fastjet.PseudoJet(*map(float, row)) for row in p4]
    cs = fastjet.ClusterSequence(pjs, fastjet.JetDefinition(fastjet.antikt_algorithm, R))
    jets = fastjet.sorted_by_pt(cs.inclusive_jets(pt_min))
    return np.array([(j.pt(), j.eta(), j.phi_std()) for j in jets], dtype=np.float64).reshape(-1, 3)


def _p4_from_kin(kin: np.ndarray) -> np.ndarray:
    """(n, 4) massless four-momenta of (pT, eta, phi) rows."""
    pt, eta, phi = kin[:, 0], kin[:, 1], kin[:, 2]
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)],
                    axis=1).reshape(-1, 4)


def event_features(rows: np.ndarray, process_id: int) -> np.ndarray:
    """(n, K) features of events in the ADC2021 layout (n, 19, 3), named
    ``schema.GENERATED_EVENT_FEATURES``: the converter's MET, MET phi, object counts and H_T of
    the stored jets, then the generator's process id."""
    pt = rows[..., 0]
    return np.stack([pt[:, 0], rows[:, 0, 2], (pt[:, 1:5] > 0).sum(1), (pt[:, 5:9] > 0).sum(1),
                     (pt[:, 9:19] > 0).sum(1), pt[:, 9:19].sum(1),
                     np.full(len(rows), process_id)], axis=1)


def generate_event_shard(spec: ShardSpec, on_accept: Callable[[int], None] | None = None) -> dict:
    """One shard of an event store: exactly ``spec.n`` triggered events of
    ``spec.pythia_process`` in the ADC2021 layout. Returns the arrays of
    :func:`generate_shard` (particles (n, 19, 3), mask, features) and its stats, with the
    trigger efficiency (accepted / generated events) among them."""
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    st = _Stats()
    pythia = make_pythia(spec)
    st.t_init = time.perf_counter() - t_start
    detector = None if spec.detector is None else DETECTORS[spec.detector]()
    rng = np.random.default_rng(spec.detector_seed)
    max_events = spec.max_events or (10_000 + 2000 * spec.n)
    max_failed = 100 + spec.n
    out: list[np.ndarray] = []
    n_reported = 0
    report_every = max(1, spec.n // 20)
    while len(out) < spec.n:
        if on_accept is not None and len(out) - n_reported >= report_every:
            on_accept(len(out) - n_reported)
            n_reported = len(out)
        if st.n_events >= max_events:
            raise GenerationError(
                f"process {spec.pythia_process!r}: only {len(out)} of {spec.n} events passed the "
                f"single-lepton trigger (pT > {ADC_TRIGGER_PT:g} GeV) after {st.n_events} events")
        if not _next_event(pythia, st, spec.pythia_process, max_failed):
            continue
        st.n_events += 1
        rows = event_objects(_final_particles(pythia.event), spec.jet, detector, rng)
        if rows is not None:
            out.append(rows)
    if on_accept is not None and len(out) > n_reported:
        on_accept(len(out) - n_reported)
    t_post = time.perf_counter()
    rows = np.stack(out) if out else np.zeros((0, N_EVENT_SLOTS, 3))
    mask = rows[..., 0] > 0
    features = event_features(rows, ADC_PROCESS_IDS[spec.pythia_process])
    return {
        "particles": np.where(mask[..., None], rows, 0.0).astype(np.float32),
        "mask": mask,
        "features": features.astype(np.float32),
        "stats": {
            "t_init": st.t_init,
            "t_next": st.t_next,
            "t_post": time.perf_counter() - t_post,
            "t_total": time.perf_counter() - t_start,
            "t_cpu": time.process_time() - cpu_start,
            "n_events": st.n_events,
            "n_failed": st.n_failed,
            "n_accepted": spec.n,
            "subprocess": spec.pythia_process,
            "trigger_efficiency": spec.n / max(st.n_events, 1),
        },
    }
