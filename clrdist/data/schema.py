"""The names of a sample store's columns: the one place they are spelled.

Every writer (toy jets, the converters, the generator) takes its ``particle_features`` and
``feature_names`` from here, so a column means the same thing in every store that has it. Units:
pT, masses, MET in GeV; eta, phi dimensionless; counts as floats.
"""

from __future__ import annotations

# per-particle columns of every store: particles (N, P, 3)
PARTICLE_FEATURES = ["pt", "eta", "phi"]

# jet stores (toy, toptag converter, generator): one row per jet. The jet's four-momentum sums
# all its constituents, n_constituents counts all of them (not only the P stored)
JET_FEATURES = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "n_constituents"]
# N-subjettiness (exclusive-kT axes, beta = 1) and its ratios: generated jet stores add them
NSUBJETTINESS_FEATURES = ["tau1", "tau2", "tau3", "tau21", "tau32"]
# stores with semi-visible jets add the event's missing pT and the jet's truth invisible fraction
SVJ_FEATURES = ["met", "inv_frac"]

# dijet stores (LHCO converter, generator): one row per event; J1 is the leading jet
DIJET_FEATURES = ["m_jj", "m_J1", "m_J2", "tau21_J1", "tau32_J1", "tau21_J2", "tau32_J2",
                  "pt_J1", "eta_J1", "phi_J1", "pt_J2", "eta_J2", "phi_J2", "n_J1", "n_J2"]
# the LHCO converter adds the event's particle count, the generator the two jets' taus
LHCO_FEATURES = [*DIJET_FEATURES, "n_particles"]
GENERATED_DIJET_FEATURES = [*DIJET_FEATURES, "tau1_J1", "tau2_J1", "tau3_J1",
                            "tau1_J2", "tau2_J2", "tau3_J2"]

# the jet-substructure baseline's inputs (clrdist.eval.baselines.jet_observables): jet stores,
# dijet stores (both leading jets)
JET_OBSERVABLES = ("jet_mass", "tau21", "tau32")
DIJET_OBSERVABLES = ("m_J1", "m_J2", "tau21_J1", "tau21_J2", "tau32_J1", "tau32_J2")
# the dijet invariant mass, as this schema ("m_jj") and as other tools name it
MJJ_NAMES = ("m_jj", "mjj")

# event stores (ADC2021 converter): MET, its phi, object counts, scalar sum of jet pT
ADC_FEATURES = ["met", "met_phi", "n_electrons", "n_muons", "n_jets", "ht"]
# generated event stores add the generator's process id (clrdist.data.generation.processes
# .ADC_PROCESS_IDS: the background's sub-process, for supervised contrastive learning)
GENERATED_EVENT_FEATURES = [*ADC_FEATURES, "process_id"]

# label names of top-tagging stores (toy, toptag converter)
TOP_QCD_LABELS = {0: "qcd", 1: "top"}


def generated_features(kind: str, *, invisible: bool = False) -> list[str]:
    """Feature names of a generated store of ``kind`` "jet", "dijet" or "event"; ``invisible``: jet
    stores containing semi-visible jets (met, inv_frac appended)."""
    if kind == "dijet":
        return list(GENERATED_DIJET_FEATURES)
    if kind == "event":
        return list(GENERATED_EVENT_FEATURES)
    return [*JET_FEATURES, *NSUBJETTINESS_FEATURES, *(SVJ_FEATURES if invisible else [])]
