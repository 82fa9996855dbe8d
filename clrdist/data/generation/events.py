"""One shard: Pythia events -> jets -> selection -> the shard's arrays (runs inside a Ray task;
no Ray here).

Jets are anti-kT, E-scheme, on the visible stable particles, by one of two back-ends with the
same interface (``cluster(event)`` -> the two hardest jets' (pT, eta, phi); ``constituents(j)``):

- :class:`FjcoreJets` (particle level): the fjcore copy of FastJet inside Pythia's SlowJet, so
  the event never crosses into Python unless a jet passes the selection;
- :class:`CalorimeterJets` (``detector="simple"``): the particles go through the calorimeter of
  :mod:`clrdist.data.detector` and its cells are clustered by the fastjet package.

Constituents are stored as (pT, eta, phi), hardest first, up to ``n_particles``; features are
named in :mod:`clrdist.data.schema` (N-subjettiness with exclusive-kT axes).

Event stores (the ADC2021 processes, :func:`generate_event_shard`): every event's isolated
electrons and muons, anti-kT R = 0.4 jets of the remaining visible particles and the missing
pT, in the ADC2021 layout (MET, 4 e, 4 mu, 10 jets; (pT, eta, phi) per slot); events without
a trigger lepton are skipped.

This is the only module that imports pythia8mc, and only inside the functions that need it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from clrdist.data.detector import DETECTORS
from clrdist.data.generation.plan import GenerationError, ShardSpec
from clrdist.data.generation.processes import ADC_OBJECTS, ADC_PROCESS_IDS, ADC_TRIGGER_PT
from clrdist.data.jets import JetDef, cluster_antikt, pack_constituents
from clrdist.data.schema import (
    GENERATED_DIJET_FEATURES,
    JET_FEATURES,
    NSUBJETTINESS_FEATURES,
)
from clrdist.physics.observables import (
    delta_r,
    import_fastjet,
    jet_kinematics,
    m_jj,
    nsubjettiness_of_p4,
    pt_eta_phi,
    tau_ratios,
)

# particles beyond |eta| = 5 (beam remnants, outside any calorimeter) are not clustered
PARTICLE_ETA_MAX = 5.0
# dijet feature name prefix -> per-jet column (e.g. m_J1 is the leading jet's jet_mass)
_DIJET_QUANTITY = {"m": "jet_mass", "pt": "jet_pt", "eta": "jet_eta", "phi": "jet_phi",
                   "n": "n_constituents"}


def make_pythia(spec: ShardSpec):
    """An initialised ``pythia8mc.Pythia`` with the shard's settings and seed."""
    import pythia8mc  # only this module imports it, and only when generating

    pythia = pythia8mc.Pythia("", False)  # no banner
    for line in (*spec.settings, "Random:setSeed = on", f"Random:seed = {spec.seed}"):
        if not pythia.readString(line):
            raise GenerationError(f"process {spec.process!r}: Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise GenerationError(
            f"process {spec.process!r}: Pythia failed to initialise (check the settings: "
            f"{'; '.join(spec.settings)})"
        )
    return pythia


# --- the two clustering back-ends -------------------------------------------------------------


class FjcoreJets:
    """Particle level: anti-kT on the event's visible final particles within |eta| < 5, clustered
    in C++ by the fjcore inside Pythia's SlowJet."""

    invisible = None  # the invisible particles are read from the event only when needed

    def __init__(self, R: float, pt_floor: float) -> None:
        import pythia8mc

        # anti-kT (power -1), E-scheme masses (massSet 2), visible final particles (select 2)
        self._slowjet = pythia8mc.SlowJet(-1, R, pt_floor, PARTICLE_ETA_MAX, 2, 2, None, True, True)
        self._event = None

    def cluster(self, event) -> list[tuple[float, float, float]]:
        """(pT [GeV], eta, phi) of the event's (up to) two hardest jets, hardest first."""
        self._event = event
        sj = self._slowjet
        sj.analyze(event)
        return [(p.pT(), p.eta(), p.phi()) for p in (sj.p(j) for j in range(min(sj.sizeJet(), 2)))]

    def constituents(self, j: int) -> np.ndarray:
        """(n, 4) float64 (px, py, pz, E) GeV of jet j of the last clustered event."""
        return _p4_of(self._event, self._slowjet.constituents(j))


class CalorimeterJets:
    """Detector level: the event's visible final particles become calorimeter cells (the
    detector's random stream seeded per shard), clustered anti-kT by the fastjet package."""

    def __init__(self, detector: str, seed: int, R: float, pt_floor: float) -> None:
        self._detector = DETECTORS[detector]()
        self._rng = np.random.default_rng(seed)
        self._R, self._pt_floor = R, pt_floor
        self._cells = np.zeros((0, 4))
        self._jets: list[tuple[np.ndarray, np.ndarray]] = []
        self.invisible: np.ndarray | None = None  # (n, 4) of the last event, read with the cells

    def cluster(self, event) -> list[tuple[float, float, float]]:
        """(pT [GeV], eta, phi) of the event's (up to) two hardest jets, hardest first."""
        vis, inv = [], []
        for q in event:
            if q.isFinal():
                (vis if q.isVisible() else inv).append((q.px(), q.py(), q.pz(), q.e(), q.id()))
        vis_a = np.array(vis, dtype=np.float64).reshape(-1, 5)
        self.invisible = np.array(inv, dtype=np.float64).reshape(-1, 5)[:, :4]
        self._cells = self._detector(vis_a[:, :4], vis_a[:, 4].astype(np.int64), self._rng)
        self._jets = cluster_antikt(self._cells, self._R, self._pt_floor)[:2]
        return [tuple(jet_kinematics(jp4)[0][:3]) for jp4, _ in self._jets]

    def constituents(self, j: int) -> np.ndarray:
        """(n, 4) float64 (px, py, pz, E) GeV of jet j's cells."""
        return self._cells[self._jets[j][1]]


def _p4_of(ev, indices) -> np.ndarray:
    return np.array(
        [(q.px(), q.py(), q.pz(), q.e()) for q in (ev[i] for i in indices)], dtype=np.float64
    ).reshape(-1, 4)


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


class _Stats:
    def __init__(self) -> None:
        self.t_init = 0.0
        self.t_next = 0.0
        self.n_events = 0
        self.n_failed = 0


def _next_event(pythia, st: _Stats, process: str, max_failed: int) -> bool:
    """One ``pythia.next()``, timed and counted; False for a failed event (an error after
    ``max_failed`` of them)."""
    t0 = time.perf_counter()
    ok = pythia.next()
    st.t_next += time.perf_counter() - t0
    if not ok:
        st.n_failed += 1
        if st.n_failed > max_failed:
            raise GenerationError(
                f"process {process!r}: Pythia failed {st.n_failed} times "
                f"(after {st.n_events} good events); check the process settings"
            )
    return ok


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


# --- event stores (ADC2021 layout) ------------------------------------------------------------

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
