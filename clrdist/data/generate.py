"""Pythia 8 + FastJet event generation, fanned out as Ray tasks, written to a sample store.

    clrdist data generate top qcd --jets 100000 --out data/toptag.zarr --seed 1

Processes (label ids: ``qcd`` is 0, the others 1, 2, ... in the order given; names in the store's
``label_names``):

- ``top``: hadronic ttbar (both W -> qq'); a jet is kept only when the top and its three decay
  quarks lie within R of the jet axis (fully merged, as in the top-tagging reference data).
- ``qcd``: HardQCD:all with a pT-hat window derived from the jet selection. It follows the kind
  of the other processes: jets next to ``top``/``svj``, dijet events next to ``resonance``.
- ``resonance``: LHCO-like W' -> X Y with X -> qq', Y -> qq (masses 3500 / 500 / 100 GeV by
  default); stored as ``dijet`` events (both leading jets' constituents, leading jet first).
- ``svj``: semi-visible jets from Pythia's Hidden Valley module, Z' -> dark quarks; a fraction
  ``r_inv`` of dark hadrons decays to stable invisible particles, the rest to SM quarks. Jets are
  matched to a dark quark. Features add the event's MET and the jet's (truth) invisible pT fraction.

Jets: anti-kT (FastJet: the fjcore inside Pythia's SlowJet on particles, the fastjet package on
``--detector simple`` cells), E-scheme, visible stable particles. Constituents (pT, eta, phi),
hardest first, up to ``n_particles``. N-subjettiness with exclusive-kT axes (``jets.py``).

Reproducibility: the work is cut into shards of ``shard_size`` accepted jets (events for dijet
stores); shard k of process p gets its own seeds from ``SeedSequence([seed, hash(p), k])``
(:func:`shard_seeds`: not from p's position in the command), so the same seed gives the same
store whatever the number of workers. Every shard's seeds and settings hash are recorded in the
provenance (``shards``). Shards are handed to the writer in order, and the store holds the
samples in the random order ``sample_order(n, seed)`` (``provenance.order``), not process by
process, so batches are i.i.d. in class.
A failed shard fails the whole command and nothing appears at the output path.

This is the only module that imports pythia8mc, and only inside the functions that need it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from clrdist.data.jets import JetDef, pack_constituents
from clrdist.errors import ClrdistError
from clrdist.physics.observables import (
    delta_r,
    jet_kinematics,
    m_jj,
    nsubjettiness_of_p4,
    pt_eta_phi,
    tau_ratios,
)

__all__ = [
    "GenerationError",
    "PROCESSES",
    "JetDef",
    "ShardSpec",
    "generate_store",
    "generate_shard",
    "pythia_available",
    "register_cli",
]


def pythia_available() -> bool:
    """True when pythia8mc (the ``generation`` extra) can be imported (it is not imported here)."""
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("pythia8mc") is not None


class GenerationError(ClrdistError):
    """A generation request that cannot be satisfied (bad process list, settings, selection)."""


# process -> the store kinds it can be written into
PROCESSES: dict[str, tuple[str, ...]] = {
    "top": ("jet",),
    "qcd": ("jet", "dijet"),
    "svj": ("jet",),
    "resonance": ("dijet",),
}

DEFAULT_JET = {
    # top-tagging reference: anti-kT R = 0.8, pT in [550, 650] GeV, |eta| < 2
    "jet": JetDef(R=0.8, pt_min=550.0, pt_max=650.0, abs_eta_max=2.0),
    # LHCO-like: leading jet pT > 1.2 TeV, both leading jets |eta| < 2.5, R = 1.0
    "dijet": JetDef(R=1.0, pt_min=1200.0, pt_max=math.inf, abs_eta_max=2.5),
}
# stores with semi-visible jets: a 2 TeV Z' gives dark-quark jets of ~1 TeV of which only
# ~(1 - r_inv) is visible; a 550-650 GeV window would keep 3% of them, biased to the least
# invisible ones (truth invisible fraction 0.28 at r_inv = 0.75), 150-300 GeV keeps 20% (0.63)
SVJ_JET = JetDef(R=0.8, pt_min=150.0, pt_max=300.0, abs_eta_max=2.0)


def default_ecm(kind: str) -> float:
    """sqrt(s) in GeV when none is given: 13 TeV for dijet stores (the LHCO-like resonance and
    its QCD, as the LHC Olympics R&D sample), 14 TeV for jet stores (the top-tagging data)."""
    return 13000.0 if kind == "dijet" else 14000.0


def default_jet(processes: Sequence[str]) -> JetDef:
    """The jet definition used when none is given: by store kind, SVJ_JET if svj is present."""
    if "svj" in processes:
        return SVJ_JET
    return DEFAULT_JET["dijet" if "resonance" in processes else "jet"]

# names shared with the converters (clrdist.data.convert): jet stores start with the toptag
# converter's features, dijet stores with the LHCO converter's
JET_FEATURES = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "n_constituents",
                "tau1", "tau2", "tau3", "tau21", "tau32"]
SVJ_FEATURES = ["met", "inv_frac"]
DIJET_FEATURES = ["m_jj", "m_J1", "m_J2", "tau21_J1", "tau32_J1", "tau21_J2", "tau32_J2",
                  "pt_J1", "eta_J1", "phi_J1", "pt_J2", "eta_J2", "phi_J2", "n_J1", "n_J2",
                  "tau1_J1", "tau2_J1", "tau3_J1", "tau1_J2", "tau2_J2", "tau3_J2"]

# particles beyond |eta| = 5 (beam remnants, outside any calorimeter) are not clustered
PARTICLE_ETA_MAX = 5.0
_SEED_MAX = 900_000_000  # Pythia's Random:seed range is [1, 900_000_000]
_INVISIBLE_DM = (51, 52, 53)


@dataclass(frozen=True)
class ShardSpec:
    """Everything one Ray task needs to generate one shard (picklable, no Pythia objects)."""

    process: str
    kind: str  # "jet" or "dijet"
    n: int  # accepted jets (jet stores) or events (dijet stores) in this shard
    seed: int  # Pythia Random:seed
    detector_seed: int
    jet: JetDef
    n_particles: int
    settings: tuple[str, ...]  # Pythia settings, complete
    match_truth: bool
    want_invisible: bool  # compute met / inv_frac (stores containing svj)
    detector: str | None = None
    max_events: int = 0  # 0: automatic (1000 events per requested jet + 10000)


def _process_settings(
    process: str, kind: str, jet: JetDef, *, resonance_masses: Sequence[float], r_inv: float,
    svj_mass: float, ecm: float, mpi: bool,
) -> list[str]:
    """Pythia settings of one process (without seed)."""
    s = [
        f"Beams:eCM = {ecm:g}",
        "Print:quiet = on",
        "Next:numberCount = 0",
        f"PartonLevel:MPI = {'on' if mpi else 'off'}",
    ]
    # pT-hat window: a jet in [pt_min, pt_max] comes from partons near that pT; the bounds keep
    # the bias negligible (a jet gaining > 10% or losing > 40% of its parton's pT is rare)
    pthat_min = 0.9 * jet.pt_min
    pthat_max = 1.4 * jet.pt_max if math.isfinite(jet.pt_max) else 0.0
    if process == "top":
        s += [
            "Top:gg2ttbar = on",
            "Top:qqbar2ttbar = on",
            f"PhaseSpace:pTHatMin = {pthat_min:g}",
            f"PhaseSpace:pTHatMax = {pthat_max:g}" if pthat_max else "PhaseSpace:pTHatMax = -1",
            "24:onMode = off",
            "24:onIfAny = 1 2 3 4 5",
        ]
    elif process == "qcd":
        s += [
            "HardQCD:all = on",
            f"PhaseSpace:pTHatMin = {pthat_min:g}",
            f"PhaseSpace:pTHatMax = {pthat_max:g}" if pthat_max else "PhaseSpace:pTHatMax = -1",
        ]
    elif process == "resonance":
        m_w, m_x, m_y = resonance_masses
        # W'+ -> X+ Y0 with X = H+ (37) and Y = H0 (35) given the requested masses, X -> u dbar,
        # c sbar and Y -> q qbar (q = d, u, s, c, b) democratically. All channels use meMode 100
        # (fixed branching ratios): the model widths of light-quark Higgs decays are ~0.
        s += [
            "NewGaugeBoson:ffbar2Wprime = on",
            f"34:m0 = {m_w:g}",
            "34:oneChannel = 1 1.0 100 37 35",
            f"37:m0 = {m_x:g}",
            "37:oneChannel = 1 0.5 100 2 -1",
            "37:addChannel = 1 0.5 100 4 -3",
            f"35:m0 = {m_y:g}",
            "35:oneChannel = 1 0.2 100 1 -1",
            *(f"35:addChannel = 1 0.2 100 {q} -{q}" for q in (2, 3, 4, 5)),
        ]
    elif process == "svj":
        # Hidden Valley SU(3), one dark flavour, Lambda = m_dark = 20 GeV, dark quark 10 GeV
        # (the common s-channel semi-visible-jet benchmark). Every dark hadron gets decay
        # channels: with probability r_inv to a pair of stable invisible DM states (51 / 53),
        # otherwise to SM quarks (pseudoscalar -> b bbar, vector -> q qbar democratically).
        m_dark = 20.0
        s += [
            "HiddenValley:ffbar2Zv = on",
            f"4900023:m0 = {svj_mass:g}",
            f"4900023:mWidth = {0.01 * svj_mass:g}",
            "4900023:onMode = off",
            "4900023:onIfAny = 4900101",
            "HiddenValley:Ngauge = 3",
            "HiddenValley:nFlav = 1",
            "HiddenValley:fragment = on",
            "HiddenValley:FSR = on",
            "HiddenValley:alphaOrder = 1",
            f"HiddenValley:Lambda = {m_dark:g}",
            f"HiddenValley:pTminFSR = {1.1 * m_dark:g}",
            "HiddenValley:spinFv = 0",
            "HiddenValley:probVector = 0.75",
            f"4900101:m0 = {m_dark / 2:g}",
            "51:m0 = 0.0",
            "51:isResonance = false",
            "53:m0 = 0.0",
            "53:isResonance = false",
        ]
        for pid in (4900111, 4900113, 4900211, 4900213):
            s.append(f"{pid}:m0 = {m_dark:g}")
        s += _dark_hadron_decays(r_inv)
        s += ["4900991:mayDecay = off", "4901114:mayDecay = off"]  # dark glueball, baryon: stable
    else:  # pragma: no cover - checked by the caller
        raise GenerationError(f"unknown process {process!r}")
    return s


def _dark_hadron_decays(r_inv: float) -> list[str]:
    out: list[str] = []

    def channels(pid: int, dm: int, sm: list[tuple[int, int]]) -> None:
        chans: list[str] = []
        if r_inv > 0:
            chans.append(f"1 {r_inv:.6g} 0 {dm} -{dm}")
        if r_inv < 1:
            for a, b in sm:
                chans.append(f"1 {(1 - r_inv) / len(sm):.6g} 91 {a} {b}")
        out.append(f"{pid}:oneChannel = {chans[0]}")
        out.extend(f"{pid}:addChannel = {c}" for c in chans[1:])

    channels(4900111, 51, [(5, -5)])
    channels(4900113, 53, [(q, -q) for q in (1, 2, 3, 4, 5)])
    # off-diagonal states (not produced with one flavour; stable in Pythia's default, invisible)
    out.append("4900211:oneChannel = 1 1.0 0 51 -51")
    out.append("4900213:oneChannel = 1 1.0 0 53 -53")
    return out


# --------------------------------------------------------------------------------------------
# one shard (runs inside a Ray task; no Ray here)
# --------------------------------------------------------------------------------------------


def _make_pythia(spec: ShardSpec):
    import pythia8mc  # noqa: PLC0415 - only this module imports it, and only when generating

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


def _p4_of(ev, indices) -> np.ndarray:
    return np.array(
        [(q.px(), q.py(), q.pz(), q.e()) for q in (ev[i] for i in indices)], dtype=np.float64
    ).reshape(-1, 4)


def _truth_axes(process: str, proc) -> list[list[tuple[float, float]]]:
    """Per truth object, the (eta, phi) of the directions a matched jet must contain.

    top: [top, b, q, q'] for each top; svj: [dark quark] for each outgoing dark quark.
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
    elif process == "svj":
        for i in range(proc.size()):
            q = proc[i]
            if q.idAbs() == 4900101 and q.status() == 23:
                groups.append([(q.eta(), q.phi())])
    return groups


def _matched(eta: float, phi: float, groups, R: float) -> bool:
    return any(all(delta_r(eta, phi, e, p) < R for e, p in g) for g in groups)


class _Stats:
    def __init__(self) -> None:
        self.t_init = 0.0
        self.t_next = 0.0
        self.t_total = 0.0
        self.n_events = 0
        self.n_failed = 0


def generate_shard(spec: ShardSpec, on_accept: Callable[[int], None] | None = None) -> dict:
    """Generate one shard: exactly ``spec.n`` accepted jets (or dijet events).

    on_accept(k) is called with the number of newly accepted samples every ~5% of the shard
    (progress reporting). Returns {"particles": (n, P', 3) float32, "mask": (n, P') bool, "features": (n, K) float32,
    "stats": {...}} with P' = P for jet stores and 2P for dijet stores.
    """
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    st = _Stats()
    pythia = _make_pythia(spec)
    st.t_init = time.perf_counter() - t_start
    jet = spec.jet
    dijet = spec.kind == "dijet"
    detector = None
    if spec.detector is not None:
        from clrdist.data.detector import DETECTORS  # noqa: PLC0415

        detector = DETECTORS[spec.detector]()
    det_rng = np.random.default_rng(spec.detector_seed)
    # jets below half the window cannot enter it; dijet stores need the subleading jet too
    pt_floor = 20.0 if dijet else 0.5 * jet.pt_min
    slowjet = None
    if detector is None:
        import pythia8mc  # noqa: PLC0415

        # anti-kT (power -1), E-scheme masses (massSet 2), visible final particles (select 2)
        # within |eta| < 5, clustered by the fjcore copy of FastJet inside Pythia
        slowjet = pythia8mc.SlowJet(-1, jet.R, pt_floor, PARTICLE_ETA_MAX, 2, 2, None, True, True)
    max_events = spec.max_events or (10_000 + 1000 * spec.n)
    max_failed = 100 + spec.n

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
        t0 = time.perf_counter()
        ok = pythia.next()
        st.t_next += time.perf_counter() - t0
        if not ok:
            st.n_failed += 1
            if st.n_failed > max_failed:
                raise GenerationError(
                    f"process {spec.process!r}: Pythia failed {st.n_failed} times "
                    f"(after {st.n_events} good events); check the process settings"
                )
            continue
        st.n_events += 1
        ev = pythia.event

        # --- jets of this event: list of (pt, eta, phi, fetch-constituents) hardest first ----
        invisible = None
        if detector is None:
            slowjet.analyze(ev)
            n_jets = min(slowjet.sizeJet(), 2)
            cands = []
            for j in range(n_jets):
                p = slowjet.p(j)
                cands.append((p.pT(), p.eta(), p.phi(), j))

            def fetch(j, _sj=slowjet, _ev=ev):
                return _p4_of(_ev, _sj.constituents(j))
        else:
            vis = []
            inv = []
            for q in ev:
                if q.isFinal():
                    (vis if q.isVisible() else inv).append((q.px(), q.py(), q.pz(), q.e(), q.id()))
            vis_a = np.array(vis, dtype=np.float64).reshape(-1, 5)
            invisible = np.array(inv, dtype=np.float64).reshape(-1, 5)[:, :4]
            cells = detector(vis_a[:, :4], vis_a[:, 4].astype(np.int64), det_rng)
            from clrdist.data.jets import cluster_antikt  # noqa: PLC0415

            clustered = cluster_antikt(cells, jet.R, pt_floor)[:2]
            cands = []
            for j, (jp4, _) in enumerate(clustered):
                k = jet_kinematics(jp4)[0]
                cands.append((k[0], k[1], k[2], j))

            def fetch(j, _cl=clustered, _cells=cells):
                return _cells[_cl[j][1]]

        # --- selection ------------------------------------------------------------------------
        if dijet:
            if len(cands) < 2:
                continue
            (pt1, eta1, _, j1), (_, eta2, _, j2) = cands
            if not (jet.pt_min <= pt1 <= jet.pt_max):
                continue
            if abs(eta1) >= jet.abs_eta_max or abs(eta2) >= jet.abs_eta_max:
                continue
            cons_list += [fetch(j1), fetch(j2)]
            n_acc += 1
            continue
        keep = [
            c for c in cands if jet.pt_min <= c[0] <= jet.pt_max and abs(c[1]) < jet.abs_eta_max
        ]
        if not keep:
            continue
        if spec.match_truth:
            groups = _truth_axes(spec.process, pythia.process)
            keep = [c for c in keep if _matched(c[1], c[2], groups, jet.R)]
        if spec.want_invisible and keep and invisible is None:
            invisible = np.array(
                [(q.px(), q.py(), q.pz(), q.e()) for q in ev if q.isFinal() and not q.isVisible()],
                dtype=np.float64,
            ).reshape(-1, 4)
        for *_, j in keep[: spec.n - n_acc]:
            cons = fetch(j)
            cons_list.append(cons)
            if spec.want_invisible:
                extra.append(_invisible_features(invisible, cons.sum(axis=0), jet.R))
            n_acc += 1

    if on_accept is not None and n_acc > n_reported:
        on_accept(n_acc - n_reported)

    # --- arrays ----------------------------------------------------------------------------------
    t_post = time.perf_counter()
    taus = nsubjettiness_of_p4(cons_list, r0=jet.R, n_max=3)
    t21, t32 = tau_ratios(taus)
    jet_p4 = np.stack([c.sum(axis=0) for c in cons_list])
    kin = jet_kinematics(jet_p4)
    n_const = np.array([len(c) for c in cons_list], dtype=np.float64)
    cols = {"pt": kin[:, 0], "eta": kin[:, 1], "phi": kin[:, 2], "mass": kin[:, 3], "n": n_const,
            "tau1": taus[:, 0], "tau2": taus[:, 1], "tau3": taus[:, 2], "tau21": t21, "tau32": t32}
    packed = [pack_constituents(c, spec.n_particles) for c in cons_list]
    parts = np.stack([p for p, _ in packed])
    mask = np.stack([m for _, m in packed])
    if dijet:
        n = spec.n
        parts = parts.reshape(n, 2 * spec.n_particles, 3)
        mask = mask.reshape(n, 2 * spec.n_particles)
        pairs = jet_p4.reshape(n, 2, 4)
        cols["m_jj"] = np.repeat(m_jj(pairs[:, 0], pairs[:, 1]), 2)  # per jet, both rows alike
        features = np.stack([_dijet_column(cols, name) for name in DIJET_FEATURES], axis=1)
    else:
        names = ["pt", "eta", "phi", "mass", "n", "tau1", "tau2", "tau3", "tau21", "tau32"]
        features = np.stack([cols[k] for k in names], axis=1)  # JET_FEATURES order
        if spec.want_invisible:
            features = np.concatenate([features, np.array(extra, dtype=np.float64)], axis=1)
    st.t_total = time.perf_counter() - t_start
    return {
        "particles": parts.astype(np.float32),
        "mask": mask,
        "features": features.astype(np.float32),
        "stats": {
            "t_init": st.t_init,
            "t_next": st.t_next,
            "t_post": time.perf_counter() - t_post,
            "t_total": st.t_total,
            "t_cpu": time.process_time() - cpu_start,
            "n_events": st.n_events,
            "n_failed": st.n_failed,
            "n_accepted": spec.n,
        },
    }


def _dijet_column(cols: dict[str, np.ndarray], name: str) -> np.ndarray:
    """One DIJET_FEATURES column from per-jet columns (rows: J1, J2, J1, J2, ...)."""
    if name == "m_jj":
        return cols["m_jj"][0::2]
    quantity, which = name.rsplit("_", 1)  # e.g. "tau21", "J1"
    quantity = {"m": "mass"}.get(quantity, quantity)
    return cols[quantity][0::2] if which == "J1" else cols[quantity][1::2]


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


# --------------------------------------------------------------------------------------------
# the store: planning, Ray fan-out, ordered writing
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    kind: str
    jet: JetDef
    ecm: float  # GeV
    labels: dict[str, int]
    shards: list[ShardSpec] = field(default_factory=list)


def _plan(
    processes: Sequence[str], n_jets: int, *, seed: int, jet: JetDef | None, n_particles: int,
    detector: str | None, resonance_masses: Sequence[float], r_inv: float, svj_mass: float,
    ecm: float | None, mpi: bool, shard_size: int, pythia_settings, match_truth: bool,
) -> _Plan:
    procs = list(processes)
    if not procs:
        raise GenerationError("no process given (choose from: " + ", ".join(PROCESSES) + ")")
    unknown = [p for p in procs if p not in PROCESSES]
    if unknown:
        raise GenerationError(
            f"unknown process {unknown[0]!r} (known: {', '.join(PROCESSES)})"
        )
    if len(set(procs)) != len(procs):
        raise GenerationError(f"process listed twice: {' '.join(procs)}")
    kinds = set.intersection(*(set(PROCESSES[p]) for p in procs))
    if not kinds:
        jetp = [p for p in procs if PROCESSES[p] == ("jet",)]
        dij = [p for p in procs if PROCESSES[p] == ("dijet",)]
        raise GenerationError(
            f"cannot mix jet processes ({', '.join(jetp)}) and dijet-event processes "
            f"({', '.join(dij)}) in one store; generate them into separate stores"
        )
    kind = "jet" if "jet" in kinds else "dijet"
    if n_jets <= 0:
        raise GenerationError(f"--jets must be positive, got {n_jets}")
    if n_particles <= 0:
        raise GenerationError(f"--max-particles must be positive, got {n_particles}")
    if not 0.0 <= r_inv <= 1.0:
        raise GenerationError(f"--r-inv must be in [0, 1], got {r_inv}")
    if len(resonance_masses) != 3 or not all(m > 0 for m in resonance_masses):
        raise GenerationError(
            f"--resonance-masses needs three positive masses M,mX,mY, got {resonance_masses}"
        )
    m_w, m_x, m_y = resonance_masses
    if "resonance" in procs and m_x + m_y >= m_w:
        raise GenerationError(
            f"--resonance-masses: mX + mY ({m_x:g} + {m_y:g}) must be below M ({m_w:g})"
        )
    if detector is not None and detector not in ("simple",):
        raise GenerationError(f"unknown detector {detector!r} (known: simple)")
    if not 0 <= seed < 2**63:
        raise GenerationError(f"--seed must be a non-negative integer, got {seed}")
    if shard_size <= 0:
        raise GenerationError(f"shard_size must be positive, got {shard_size}")
    jet = jet or default_jet(procs)

    if isinstance(pythia_settings, Mapping):
        extra = {p: tuple(pythia_settings.get(p, ())) for p in procs}
    else:
        extra = {p: tuple(pythia_settings or ()) for p in procs}

    labels: dict[str, int] = {}
    if "qcd" in procs:
        labels["qcd"] = 0
    for p in procs:
        if p != "qcd":
            labels[p] = len([q for q in labels if q != "qcd"]) + 1
    ecm = default_ecm(kind) if ecm is None else ecm
    plan = _Plan(kind=kind, jet=jet, labels=labels, ecm=ecm)
    want_invisible = "svj" in procs
    n_shards = -(-n_jets // shard_size)
    for proc in procs:
        settings = tuple(
            _process_settings(
                proc, kind, jet, resonance_masses=resonance_masses, r_inv=r_inv,
                svj_mass=svj_mass, ecm=ecm, mpi=mpi,
            )
        ) + extra[proc]
        for k in range(n_shards):
            pythia_seed, det_seed = shard_seeds(seed, proc, k)
            plan.shards.append(
                ShardSpec(
                    process=proc,
                    kind=kind,
                    n=min(shard_size, n_jets - k * shard_size),
                    seed=pythia_seed,
                    detector_seed=det_seed,
                    jet=jet,
                    n_particles=n_particles,
                    settings=settings,
                    match_truth=match_truth and proc in ("top", "svj"),
                    want_invisible=want_invisible,
                    detector=detector,
                )
            )
    return plan


def shard_seeds(seed: int, process: str, index: int) -> tuple[int, int]:
    """(Pythia Random:seed, detector seed) of shard ``index`` of ``process``: a function of
    (master seed, process name, shard index) only, never of the process's position in the
    command, so `generate qcd --seed 0` and `generate qcd svj --seed 0` give their QCD shards the
    same seeds (and the held-out check can see that they may share events)."""
    key = int.from_bytes(hashlib.sha256(process.encode()).digest()[:8], "little")
    ss = np.random.SeedSequence([int(seed), key, int(index)])
    pythia_seed, det_seed = ss.generate_state(2, dtype=np.uint64)
    return int(pythia_seed % _SEED_MAX) + 1, int(det_seed)


def settings_sha256(settings: Sequence[str]) -> str:
    """Content hash of a complete Pythia settings list (without the seed)."""
    return hashlib.sha256("\n".join(settings).encode()).hexdigest()


def shard_records(shards: Sequence[ShardSpec]) -> list[dict]:
    """The shards for the store's provenance: process, index within the process, size, seeds
    and settings hash. Shards with the same process, settings and Pythia seed make the same
    events."""
    index: dict[str, int] = {}
    out = []
    for s in shards:
        k = index[s.process] = index.get(s.process, -1) + 1
        out.append({"process": s.process, "index": k, "n": s.n, "pythia_seed": s.seed,
                    "detector_seed": s.detector_seed, "settings_sha256": settings_sha256(s.settings)})
    return out


def _remote_shard(spec: ShardSpec, counter=None) -> dict:
    """Body of the Ray task; ``counter`` is the progress actor (or None)."""
    on_accept = None if counter is None else (lambda k: counter.add.remote(k))
    return generate_shard(spec, on_accept)


class _Counter:
    """Ray actor summing the accepted samples reported by running tasks (progress bar)."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> None:
        self.n += k

    def total(self) -> int:
        return self.n


def generate_store(
    processes: Sequence[str],
    n_jets: int,
    out,
    *,
    seed: int = 0,
    workers: int | None = None,
    jet: JetDef | None = None,
    n_particles: int = 50,
    detector: str | None = None,
    resonance_masses: Sequence[float] = (3500.0, 500.0, 100.0),
    r_inv: float = 0.75,
    svj_mass: float = 2000.0,
    ecm: float | None = None,
    mpi: bool = False,
    shard_size: int = 1000,
    pythia_settings: Sequence[str] | Mapping[str, Sequence[str]] = (),
    match_truth: bool = True,
    chunk_size: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
    stats: dict | None = None,
) -> Path:
    """Generate ``n_jets`` samples per process into a new store at ``out``; returns its path.

    processes: names from PROCESSES; jet stores (top, qcd, svj) or dijet stores (resonance, qcd).
    n_jets: accepted jets per process (dijet stores: accepted events per process).
    jet: selection; default ``default_jet(processes)``. n_particles: constituents kept per jet.
    workers: concurrent Ray tasks (default: the cluster's CPUs). Starts a local Ray instance if
    none is running (and stops it afterwards). shard_size: samples per task; part of the
    reproducibility contract (recorded in the provenance) together with seed.
    pythia_settings: extra Pythia settings for every process, or a mapping process -> settings.
    stats: if given, filled with per-shard timing statistics (for benchmarks).
    """
    import ray  # noqa: PLC0415

    from clrdist.cluster import ensure_ray  # noqa: PLC0415
    from clrdist.data.store import StoreWriter  # noqa: PLC0415

    plan = _plan(
        processes, n_jets, seed=seed, jet=jet, n_particles=n_particles, detector=detector,
        resonance_masses=tuple(float(m) for m in resonance_masses), r_inv=float(r_inv),
        svj_mass=float(svj_mass), ecm=None if ecm is None else float(ecm), mpi=mpi,
        shard_size=shard_size,
        pythia_settings=pythia_settings, match_truth=match_truth,
    )
    out = Path(out)
    features = (
        DIJET_FEATURES
        if plan.kind == "dijet"
        else JET_FEATURES + (SVJ_FEATURES if "svj" in plan.labels else [])
    )
    p_store = n_particles * (2 if plan.kind == "dijet" else 1)
    provenance = {
        "generator": "clrdist.data.generate",
        "pythia": _pythia_version(),
        "processes": list(processes),
        "n_per_process": n_jets,
        "seed": seed,
        "shard_size": shard_size,
        "jet": {"algorithm": "anti-kt", **plan.jet.to_dict()},
        "n_particles_per_jet": n_particles,
        "detector": None if detector is None else _detector_dict(detector),
        "match_truth": match_truth,
        "ecm": plan.ecm,  # GeV; the bump hunt's sqrt(s)
        "mpi": mpi,
        "settings": {p: list(next(s.settings for s in plan.shards if s.process == p)) for p in plan.labels},
        # every shard's seeds and settings hash (clrdist.evaluate.check_held_out compares them)
        "shards": shard_records(plan.shards),
    }
    if "resonance" in plan.labels:
        provenance["resonance_masses"] = list(resonance_masses)
    if "svj" in plan.labels:
        provenance["r_inv"] = r_inv
        provenance["svj_zprime_mass"] = svj_mass

    # the writer first: an existing output is refused before Ray starts
    with StoreWriter(
        out, kind=plan.kind, particle_features=["pt", "eta", "phi"], feature_names=features,
        label_names={v: k for k, v in plan.labels.items()}, n_particles=p_store,
        chunk_size=chunk_size, provenance=provenance, overwrite=overwrite,
        shuffle_seed=seed,  # random sample order (not process by process): i.i.d. batches
    ) as writer:
        # RAY_ADDRESS (set by `ray job submit` and on a cluster) joins that cluster; otherwise
        # a local one with at least `workers` CPUs
        started_ray = ensure_ray(workers, log_to_driver=False)
        try:
            window = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            task = ray.remote(num_cpus=1, max_retries=0)(_remote_shard)
            _run_shards(ray, task, plan, writer, window, progress, stats)
        finally:
            if started_ray:
                ray.shutdown()
    return out


def _run_shards(ray, task, plan: _Plan, writer, window: int, progress: bool, stats) -> None:
    """Keep ``window`` tasks in flight; write finished shards in task order."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    shards = plan.shards
    unit = "events" if plan.kind == "dijet" else "jets"
    bar = Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False,
    )
    pending: dict = {}  # ref -> shard index
    done: dict[int, dict] = {}
    next_submit = next_write = finished = 0
    # running tasks report accepted samples to a counter actor, so the bar moves within shards
    counter = ray.remote(num_cpus=0)(_Counter).remote() if progress else None
    t0 = time.perf_counter()
    try:
        with bar:
            tid = bar.add_task("generate", total=sum(s.n for s in shards))
            while next_write < len(shards):
                while next_submit < len(shards) and len(pending) < window:
                    pending[task.remote(shards[next_submit], counter)] = next_submit
                    next_submit += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        done[i] = ray.get(ref)
                    except Exception as e:  # the task's own error, unwrapped where possible
                        raise _task_error(shards[i], i, e) from e
                    finished += shards[i].n
                if counter is not None:
                    bar.update(tid, completed=max(finished, ray.get(counter.total.remote())))
                while next_write in done:
                    res = done.pop(next_write)
                    spec = shards[next_write]
                    label = np.full(spec.n, plan.labels[spec.process], dtype=np.int8)
                    writer.append(res["particles"], res["mask"], label, res["features"])
                    if stats is not None:
                        stats.setdefault("shards", []).append(
                            {"process": spec.process, **res["stats"]}
                        )
                    next_write += 1
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    if stats is not None:
        stats["wall"] = time.perf_counter() - t0
        stats["workers"] = window


def _task_error(spec: ShardSpec, i: int, exc: Exception) -> GenerationError:
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, GenerationError):
        return GenerationError(f"{cause} (shard {i}, Pythia seed {spec.seed})")
    text = str(cause).strip().splitlines()
    msg = text[-1] if text else type(cause).__name__
    return GenerationError(
        f"generation task for {spec.process!r} (shard {i}, Pythia seed {spec.seed}) failed: "
        f"{type(cause).__name__}: {msg}"
    )


def _pythia_version() -> str | None:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("pythia8mc")
    except Exception:  # pragma: no cover - not installed
        return None


def _detector_dict(name: str) -> dict:
    from clrdist.data.detector import DETECTORS  # noqa: PLC0415

    return DETECTORS[name]().to_dict()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _masses(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected M,mX,mY in GeV, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three masses M,mX,mY in GeV, got {text!r}")
    return vals  # type: ignore[return-value]


def register_cli(subparsers) -> None:
    """Add ``generate`` to the ``clrdist data`` sub-commands."""
    g = subparsers.add_parser(
        "generate",
        help="generate jets / dijet events with Pythia 8 + FastJet (Ray tasks) into a store",
        description=(
            "Generate samples with Pythia 8 and FastJet as Ray tasks. Jet processes: top, qcd, "
            "svj (kind 'jet'); dijet processes: resonance, qcd (kind 'dijet'). "
            "Needs the 'generation' extra (pythia8mc)."
        ),
    )
    g.add_argument("processes", nargs="+", metavar="PROCESS", help=f"one or more of {', '.join(PROCESSES)}")
    g.add_argument("--jets", type=int, required=True, metavar="N", help="accepted jets (dijet: events) per process")
    g.add_argument("--out", required=True, metavar="STORE", help="output store (Zarr directory)")
    g.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    g.add_argument("--workers", type=int, default=None, help="concurrent Ray tasks (default: all CPUs)")
    g.add_argument("--detector", choices=["simple"], default=None, help="fast calorimeter simulation")
    g.add_argument("--r-inv", type=float, default=0.75, help="svj: invisible fraction of dark hadrons")
    g.add_argument("--svj-mass", type=float, default=2000.0, help="svj: Z' mass in GeV")
    g.add_argument("--resonance-masses", type=_masses, default=(3500.0, 500.0, 100.0),
                   metavar="M,mX,mY", help="resonance: W', X, Y masses in GeV (default 3500,500,100)")
    g.add_argument("--jet-r", type=float, default=None, help="anti-kT radius (default 0.8; dijet 1.0)")
    g.add_argument("--pt-min", type=float, default=None, help="jet pT window low edge, GeV (default 550; svj 150; dijet: leading jet 1200)")
    g.add_argument("--pt-max", type=float, default=None, help="jet pT window high edge, GeV (default 650; svj 300; dijet: none)")
    g.add_argument("--eta-max", type=float, default=None, help="jet |eta| cut (default 2.0; dijet 2.5)")
    g.add_argument("--max-particles", type=int, default=50, metavar="P", help="constituents kept per jet")
    g.add_argument("--ecm", type=float, default=None,
                   help="centre-of-mass energy, GeV (default: jet stores 14000 as the top-tagging "
                        "data, dijet stores 13000 as LHCO)")
    g.add_argument("--mpi", action="store_true", help="switch on multiparton interactions (off by default)")
    g.add_argument("--pythia", action="append", default=[], metavar="SETTING",
                   help="extra Pythia setting for every process, e.g. 'PartonLevel:ISR = off' (repeatable)")
    g.add_argument("--shard-size", type=int, default=1000, help="samples per Ray task (part of the seed contract)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing store")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    try:
        import pythia8mc  # noqa: F401, PLC0415
    except ImportError:
        raise GenerationError(
            "pythia8mc is not installed; install the generation extra: pip install 'clrdist[generation]'"
        ) from None
    bad = [p for p in args.processes if p not in PROCESSES]
    if bad:
        raise GenerationError(f"unknown process {bad[0]!r} (known: {', '.join(PROCESSES)})")
    base = default_jet(args.processes)
    overrides = {
        k: v
        for k, v in (("R", args.jet_r), ("pt_min", args.pt_min), ("pt_max", args.pt_max),
                     ("abs_eta_max", args.eta_max))
        if v is not None
    }
    try:
        jet = replace(base, **overrides)
    except ValueError as e:
        raise GenerationError(f"jet selection: {e}") from None
    out = generate_store(
        args.processes, args.jets, args.out, seed=args.seed, workers=args.workers, jet=jet,
        n_particles=args.max_particles, detector=args.detector,
        resonance_masses=args.resonance_masses, r_inv=args.r_inv, svj_mass=args.svj_mass,
        ecm=args.ecm, mpi=args.mpi, shard_size=args.shard_size, pythia_settings=args.pythia,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(f"wrote {out}")
    return 0
