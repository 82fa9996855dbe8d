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
- ADC2021-like events (store kind ``event``, 13 TeV; :data:`ADC_PROCESSES`): ``adc_background``
  is the SM mix of the sub-processes in :data:`ADC_BACKGROUND` (W -> l nu, QCD heavy flavour
  with semileptonic decays, Z/gamma* -> l l, ttbar) in the published proportions; the signals
  ``ato4l`` (a 50 GeV scalar -> Z Z* -> 4 l), ``leptoquark`` (80 GeV, -> b tau),
  ``htautau`` (a 60 GeV scalar -> tau tau) and ``hchtaunu`` (a 60 GeV H+- -> tau nu). Every
  event passes the single-lepton trigger (docs/events.md has the physics and the reasons).

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
    # ADC2021-like events (kind "event"): the background mix and the four signals
    "adc_background": ("event",),
    "ato4l": ("event",),
    "leptoquark": ("event",),
    "htautau": ("event",),
    "hchtaunu": ("event",),
}

# ADC2021 event processes -> store label, as the ADC2021 converter labels the published files
# (clrdist.data.convert.ADC_LABELS): one schema whether the events are converted or generated
ADC_PROCESSES: dict[str, int] = {"adc_background": 0, "ato4l": 1, "leptoquark": 2,
                                 "hchtaunu": 3, "htautau": 4}
# the background's sub-processes and their shares of the mix (Govorkova et al., Sci. Data 9,
# 118 (2022): W 0.59, QCD 0.34, Z 0.07, ttbar 0.003 of the lepton-triggered events; normalised)
ADC_BACKGROUND: dict[str, float] = {"adc_w": 0.59, "adc_qcd": 0.34, "adc_z": 0.07,
                                   "adc_ttbar": 0.003}
# the generator's process id (the ``process_id`` feature of generated event stores): the
# background's sub-processes, then the signals
ADC_PROCESS_IDS: dict[str, int] = {"adc_w": 0, "adc_qcd": 1, "adc_z": 2, "adc_ttbar": 3,
                                   "ato4l": 4, "leptoquark": 5, "htautau": 6, "hchtaunu": 7}
# objects of an ADC2021 event (Govorkova et al.): up to 4 electrons, 4 muons, 10 jets (anti-kT
# R = 0.4) in their acceptance, behind MET in row 0; a single-lepton trigger at 23 GeV
ADC_JET = JetDef(R=0.4, pt_min=15.0, pt_max=math.inf, abs_eta_max=4.0)
ADC_OBJECTS = {"electron": {"n": 4, "pt_min": 3.0, "abs_eta_max": 3.0},
               "muon": {"n": 4, "pt_min": 3.0, "abs_eta_max": 2.1},
               "jet": {"n": 10, "pt_min": 15.0, "abs_eta_max": 4.0}}
ADC_TRIGGER_PT = 23.0  # GeV: at least one selected electron or muon above it


def adc_subprocesses(process: str, n: int) -> list[tuple[str, int]]:
    """(sub-process, events) making ``n`` events of an ADC2021 process: the background's
    sub-processes in their shares (rounded; the remainder to W), a signal as itself."""
    if process != "adc_background":
        return [(process, n)]
    total = sum(ADC_BACKGROUND.values())
    counts = {sub: int(round(frac / total * n)) for sub, frac in ADC_BACKGROUND.items()}
    counts["adc_w"] += n - sum(counts.values())
    return [(sub, k) for sub, k in counts.items() if k > 0]

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
    its QCD, as the LHC Olympics R&D sample) and event stores (ADC2021), 14 TeV for jet stores
    (the top-tagging data)."""
    return 13000.0 if kind in ("dijet", "event") else 14000.0


def default_jet(processes: Sequence[str]) -> JetDef:
    """The jet definition used when none is given: by store kind, SVJ_JET if svj is present."""
    if any(p in ADC_PROCESSES for p in processes):
        return ADC_JET
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
    if process in ADC_SETTINGS:  # an ADC2021 sub-process or signal (kind "event")
        s += ADC_SETTINGS[process]
    elif process == "top":
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


# b- and c-hadrons forced to decays with an electron or muon: QCD multijet events with a lepton
# above the 23 GeV trigger come from heavy-flavour decays (light-flavour fakes need a detector),
# and forcing the decays raises the trigger efficiency of b bbar / c cbar events ~10 times
_HEAVY_HADRONS = (511, 521, 531, 5122, 411, 421, 431, 4122)
_LEPTONIC_HF = [f"{pid}:{k}" for pid in _HEAVY_HADRONS
                for k in ("onMode = off", "onIfAny = 11 13")]

# Pythia settings of the ADC2021 sub-processes and signals (after the common lines)
ADC_SETTINGS: dict[str, list[str]] = {
    # W -> e nu, mu nu, tau nu (taus decay freely; the trigger keeps the leptonic ones)
    "adc_w": ["WeakSingleBoson:ffbar2W = on", "24:onMode = off", "24:onIfAny = 11 13 15"],
    # Z/gamma* -> l l with m_ll > 50 GeV
    "adc_z": ["WeakSingleBoson:ffbar2gmZ = on", "23:onMode = off", "23:onIfAny = 11 13 15",
          "PhaseSpace:mHatMin = 50"],
    # ttbar, all decays
    "adc_ttbar": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"],
    # QCD heavy flavour (gg, q qbar -> b bbar, c cbar), pT-hat > 30 GeV, semileptonic decays
    "adc_qcd": ["HardQCD:hardbbbar = on", "HardQCD:hardccbar = on", "PhaseSpace:pTHatMin = 30",
            *_LEPTONIC_HF],
    # A -> 4 l: a Higgs-like scalar of 50 GeV from gluon fusion -> Z Z* -> (e e | mu mu) x 2;
    # Z's lower mass limit at 1 GeV so that both Zs can be off shell below 50 GeV
    "ato4l": ["HiggsSM:gg2H = on", "25:m0 = 50", "25:onMode = off", "25:onIfMatch = 23 23",
              "23:onMode = off", "23:onIfAny = 11 13", "23:mMin = 1"],
    # leptoquark pairs (80 GeV), each -> b tau: charge 2/3 (chargeType 2) for b + tau+
    "leptoquark": ["LeptoQuark:gg2LQLQbar = on", "LeptoQuark:qqbar2LQLQbar = on", "42:m0 = 80",
                   "42:chargeType = 2", "42:oneChannel = 1 1.0 0 5 -15"],
    # h0 (60 GeV) from gluon fusion -> tau tau
    "htautau": ["HiggsSM:gg2H = on", "25:m0 = 60", "25:onMode = off", "25:onIfMatch = 15 -15"],
    # h+- (60 GeV) from f fbar' -> tau nu; the tau decays to e or mu (a triggered event's lepton
    # can only come from it, so forcing the decay loses nothing and saves ~3x the events)
    "hchtaunu": ["Higgs:useBSM = on", "HiggsBSM:ffbar2H+- = on", "37:m0 = 60", "37:onMode = off",
                 "37:onIfMatch = 15 16", "15:onMode = off", "15:onIfAny = 11 13"],
}


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
