"""Pythia 8 settings of each process, and the jet selection and collision energy by default.

- ``top``: hadronic ttbar (both W -> qq'); with truth matching a jet is kept only when the top
  and its three decay quarks lie within R of the jet axis (fully merged, as in the top-tagging
  reference data).
- ``w``: W + jet (q qbar -> W g, q g -> W q) with W -> q q' only; with truth matching a jet is
  kept only when the W and both its decay quarks lie within R of the jet axis (the boosted W
  signal of the jet-image and mimicker studies).
- ``qcd``: HardQCD:all with a pT-hat window derived from the jet selection. It follows the kind
  of the other processes: jets next to ``top``/``svj``, dijet events next to ``resonance``.
- ``resonance``: LHCO-like W' -> X Y with X -> qq', Y -> qq (masses 3500 / 500 / 100 GeV by
  default); stored as ``dijet`` events (both leading jets' constituents, leading jet first).
- ``svj``: semi-visible jets from Pythia's Hidden Valley module, Z' -> dark quarks; a fraction
  ``r_inv`` of dark hadrons decays to stable invisible particles, the rest to SM quarks.

The settings are plain strings (no Pythia import here); their sha256 is part of every shard's
provenance record, so any change to them changes which stores the held-out check calls disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clrdist.data.jets import JetDef

# process -> the store kinds it can be written into
PROCESSES: dict[str, tuple[str, ...]] = {
    "top": ("jet",),
    "w": ("jet",),
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


def process_settings(
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
    window = [f"PhaseSpace:pTHatMin = {pthat_min:g}",
              f"PhaseSpace:pTHatMax = {pthat_max:g}" if pthat_max else "PhaseSpace:pTHatMax = -1"]
    w_to_quarks = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"]  # hadronic W decays only
    if process == "top":
        s += [
            "Top:gg2ttbar = on",
            "Top:qqbar2ttbar = on",
            *window,
            *w_to_quarks,
        ]
    elif process == "w":
        s += [
            "WeakBosonAndParton:qqbar2Wg = on",
            "WeakBosonAndParton:qg2Wq = on",
            *window,
            *w_to_quarks,
        ]
    elif process == "qcd":
        s += [
            "HardQCD:all = on",
            *window,
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
    else:  # pragma: no cover - GenerationConfig admits only the names in PROCESSES
        raise ValueError(f"unknown process {process!r}")
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
