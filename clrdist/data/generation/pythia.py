"""Pythia's side of a shard: the initialised generator (:func:`make_pythia`), its timed and
counted event step, and the two clustering back-ends that read its events.

Jets are anti-kT, E-scheme, on the visible stable particles, by one of two back-ends with the
same interface (``cluster(event)`` -> the two hardest jets' (pT, eta, phi); ``constituents(j)``):

- :class:`FjcoreJets` (particle level): the fjcore copy of FastJet inside Pythia's SlowJet, so
  the event never crosses into Python unless a jet passes the selection;
- :class:`CalorimeterJets` (``detector="simple"``): the particles go through the calorimeter of
  :mod:`clrdist.data.detector` and its cells are clustered by the fastjet package.

This is the only module that imports pythia8mc, and only inside the functions that need it.
"""

from __future__ import annotations

import time

import numpy as np

from clrdist.data.detector import DETECTORS
from clrdist.data.generation.plan import GenerationError, ShardSpec
from clrdist.data.jets import cluster_antikt
from clrdist.physics.observables import jet_kinematics

# particles beyond |eta| = 5 (beam remnants, outside any calorimeter) are not clustered
PARTICLE_ETA_MAX = 5.0


def make_pythia(spec: ShardSpec):
    """An initialised ``pythia8mc.Pythia`` with the shard's settings and seed."""
    # lazy: pythia8mc is optional (the generation extra)
    import pythia8mc

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


# --- the two clustering back-ends -------------------------------------------------------------


class FjcoreJets:
    """Particle level: anti-kT on the event's visible final particles within |eta| < 5, clustered
    in C++ by the fjcore inside Pythia's SlowJet."""

    invisible = None  # the invisible particles are read from the event only when needed

    def __init__(self, R: float, pt_floor: float) -> None:
        # lazy: pythia8mc is optional (the generation extra)
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
