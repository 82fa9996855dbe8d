"""ADC2021-like event generation: the plan, the object selection on hand-made events, and the
physics of small Pythia samples (Z and A -> 4 l masses, the W transverse-mass edge,
multiplicities, reproducibility).

The Pythia samples are one shard each (no Ray) and small; the tolerances are set from their
statistics (see each test). The store end to end (Ray) is marked ``integration``.
"""

from __future__ import annotations

import numpy as np
import pytest

from clrdist.data.convert import ADC_LABELS
from clrdist.data.detector import SimpleCalorimeter
from clrdist.data.generation import GenerationConfig, GenerationError, make_plan
from clrdist.data.generation.processes import (
    ADC_BACKGROUND,
    ADC_JET,
    ADC_PROCESS_IDS,
    adc_subprocesses,
)
from clrdist.data.schema import ADC_FEATURES, GENERATED_EVENT_FEATURES, generated_features

SIGNALS = ["ato4l", "leptoquark", "htautau", "hchtaunu"]


def _plan(procs, n, **kw):
    return make_plan(GenerationConfig(processes=procs, n_jets=n, **kw))


# --- the plan (no Pythia) ---------------------------------------------------------------------


def test_background_mix_shares_and_labels():
    parts = dict(adc_subprocesses("adc_background", 10_000))
    assert sum(parts.values()) == 10_000
    total = sum(ADC_BACKGROUND.values())
    for sub, frac in ADC_BACKGROUND.items():
        assert parts[sub] == pytest.approx(10_000 * frac / total, abs=1.01)
    assert parts["adc_w"] > parts["adc_qcd"] > parts["adc_z"] > parts["adc_ttbar"] > 0
    assert adc_subprocesses("ato4l", 7) == [("ato4l", 7)]
    # a small background leaves out shares that round to zero, never a negative count
    assert dict(adc_subprocesses("adc_background", 10)) == {"adc_w": 6, "adc_qcd": 3, "adc_z": 1}


def test_event_plan_labels_follow_the_converter_whatever_the_order():
    plan = _plan(["htautau", "ato4l", "adc_background"], 2500, seed=3, shard_size=1000)
    assert plan.kind == "event" and plan.ecm == 13000.0 and plan.jet == ADC_JET
    assert plan.labels == {"htautau": 4, "ato4l": 1, "adc_background": 0}
    for proc, lab in plan.labels.items():
        assert ADC_LABELS[lab].lower().replace("to", "") == {
            "adc_background": "background", "ato4l": "a4l", "htautau": "htautau"}[proc]
    subs = [s.pythia_process for s in plan.shards]
    assert set(subs) == {"htautau", "ato4l", *ADC_BACKGROUND}
    n_by = {p: sum(s.n for s in plan.shards if s.pythia_process == p) for p in set(subs)}
    assert n_by["htautau"] == n_by["ato4l"] == 2500
    assert sum(n_by[p] for p in ADC_BACKGROUND) == 2500
    assert all(s.process == "adc_background" for s in plan.shards if s.subprocess)
    # a sub-process's seeds depend on (seed, sub-process, shard) only, not on the other processes
    alone = _plan(["adc_background"], 2500, seed=3, shard_size=1000)
    seeds = {(s.pythia_process, s.seed) for s in plan.shards}
    assert {(s.pythia_process, s.seed) for s in alone.shards} <= seeds
    assert len({s.seed for s in plan.shards}) == len(plan.shards)
    assert GenerationConfig(processes=["ato4l"], n_jets=1).n_slots == 19


def test_event_processes_do_not_mix_with_jets():
    with pytest.raises(GenerationError, match=r"cannot mix jet processes \(top\) and ADC2021 "
                                              r"event processes \(ato4l\)"):
        GenerationConfig(processes=["top", "ato4l"], n_jets=1)


def test_generated_event_features_extend_the_converter_schema():
    assert generated_features("event") == GENERATED_EVENT_FEATURES
    assert GENERATED_EVENT_FEATURES[: len(ADC_FEATURES)] == ADC_FEATURES
    assert GENERATED_EVENT_FEATURES[-1] == "process_id"


# --- the object selection on hand-made events -------------------------------------------------

pytest.importorskip("fastjet")
from clrdist.data.generation.events import event_objects  # noqa: E402


def _particle(pt, eta, phi, pid, visible=True, m=0.0):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return [px, py, pz, e, pid, float(visible)]


def _w_like_event(mu_pt=40.0, hadron_near_mu=0.0):
    rows = [_particle(mu_pt, 0.5, 1.0, 13), _particle(35.0, -0.3, -2.0, 14, visible=False)]
    # a 60 GeV jet of six pions near (eta, phi) = (1.5, -1.5) and soft junk far forward
    rows += [_particle(10.0, 1.5 + 0.05 * k, -1.5 + 0.03 * k, 211) for k in range(6)]
    rows += [_particle(0.7, 4.6, 0.3, 22), _particle(2.0, 5.5, 0.0, 2212)]
    if hadron_near_mu:
        rows.append(_particle(hadron_near_mu, 0.55, 1.05, 211))
    return np.array(rows)


def test_event_objects_layout_met_lepton_jet():
    rows = event_objects(_w_like_event(), ADC_JET, None, None)
    assert rows.shape == (19, 3)
    np.testing.assert_allclose(rows[0], [35.0, 0.0, -2.0], atol=1e-9)  # MET: the neutrino
    np.testing.assert_allclose(rows[5], [40.0, 0.5, 1.0], atol=1e-9)  # the muon, muon slot 0
    assert np.all(rows[1:5] == 0) and np.all(rows[6:9] == 0)  # no electron, one muon
    assert rows[9, 0] == pytest.approx(60.0, rel=0.01) and abs(rows[9, 1] - 1.625) < 0.05
    assert np.all(rows[10:] == 0)  # the soft / forward particles make no jet above 15 GeV


def test_event_objects_trigger_and_isolation():
    assert event_objects(_w_like_event(mu_pt=20.0), ADC_JET, None, None) is None  # below 23 GeV
    # a 50 GeV hadron inside the muon's isolation cone: no isolated lepton, no trigger
    assert event_objects(_w_like_event(hadron_near_mu=50.0), ADC_JET, None, None) is None
    # a 5 GeV one leaves it isolated (5 / 40 < 1.0)
    rows = event_objects(_w_like_event(hadron_near_mu=5.0), ADC_JET, None, None)
    assert rows is not None and rows[5, 0] == pytest.approx(40.0)


def test_event_objects_detector_level():
    rng = np.random.default_rng(0)
    ev = _w_like_event()
    det = [event_objects(ev, ADC_JET, SimpleCalorimeter(), rng) for _ in range(200)]
    mu = np.array([r[5, 0] for r in det])
    jet = np.array([r[9, 0] for r in det])
    met = np.array([r[0, 0] for r in det])
    # muon: sigma/pT = 1% (+) 0.4% at 40 GeV -> ~0.43 GeV; mean within 4 sigma/sqrt(200)
    assert abs(mu.mean() - 40.0) < 0.15 and 0.3 < mu.std() < 0.6
    # jet: 6 pions of 10 GeV in hadronic cells (50%/sqrt(E)): mean kept to ~2%, width > 1 GeV
    assert abs(jet.mean() / 60.0 - 1) < 0.03 and jet.std() > 1.0
    # detector MET: minus the visible sum in the calorimeter (|eta| < 4.9: not the proton),
    # unbiased up to the jet's fluctuation (the hand-made event does not balance its pT)
    vis = ev[(ev[:, 5] > 0) & (np.abs(np.arcsinh(ev[:, 2] / np.hypot(ev[:, 0], ev[:, 1]))) < 4.9)]
    true_met = np.hypot(*vis[:, :2].sum(0))
    assert abs(np.median(met) - true_met) < 2.0 and abs(true_met - 35.0) > 5


def test_smear_leptons_resolution():
    det, rng = SimpleCalorimeter(), np.random.default_rng(1)
    kin = np.tile([[100.0, 0.0, 0.3]], (4000, 1))
    mu = det.smear_leptons(kin, 13, rng)
    assert np.all(mu[:, 1:] == kin[:, 1:])
    rel = np.hypot(0.01, 1e-4 * 100)
    assert np.std(1 / mu[:, 0]) * 100 == pytest.approx(rel, rel=0.05)
    el = det.smear_leptons(kin, 11, rng)
    e_rel = np.sqrt(0.10**2 / 100 + 0.01**2)
    assert np.std(el[:, 0]) / 100 == pytest.approx(e_rel, rel=0.06)
    assert abs(el[:, 0].mean() - 100) < 4 * 100 * e_rel / np.sqrt(4000)
    with pytest.raises(ValueError, match="11 or 13"):
        det.smear_leptons(kin, 15, rng)


# --- Pythia samples (one shard each) ----------------------------------------------------------

pytest.importorskip("pythia8mc")
from clrdist.data.generation.events import generate_shard  # noqa: E402


def _sample(process, sub, n, seed=4, **kw):
    plan = _plan([process], 10 * n if process == "adc_background" else n, seed=seed,
                 shard_size=100_000, **kw)
    spec = next(s for s in plan.shards if s.pythia_process == sub)
    from dataclasses import replace

    return generate_shard(replace(spec, n=n))


def _pair_mass(kin):
    """Invariant mass of massless objects given as (k, 3) (pT, eta, phi)."""
    pt, eta, phi = kin.T
    p = np.stack([(pt * np.cosh(eta)).sum(), (pt * np.cos(phi)).sum(), (pt * np.sin(phi)).sum(),
                  (pt * np.sinh(eta)).sum()])
    return float(np.sqrt(max(p[0] ** 2 - (p[1:] ** 2).sum(), 0.0)))


@pytest.mark.slow
def test_z_dimuon_mass_peaks_at_the_z():
    res = _sample("adc_background", "adc_z", 120)
    parts, feats = res["particles"], res["features"]
    assert parts.shape == (120, 19, 3) and feats.shape == (120, len(GENERATED_EVENT_FEATURES))
    assert np.all(feats[:, -1] == ADC_PROCESS_IDS["adc_z"])
    two_mu = parts[:, 5, 0] * parts[:, 6, 0] > 0
    m = np.array([_pair_mass(p[5:7]) for p in parts[two_mu]])
    assert two_mu.sum() >= 25  # Z -> mu mu is ~1/3 of the e, mu, tau mix, most pass
    # the peak: the median of the central window sits at m_Z within ~1.5 GeV (width 2.5 GeV)
    core = m[np.abs(m - 91.2) < 10]
    assert len(core) >= 0.6 * len(m) and abs(np.median(core) - 91.2) < 1.5


@pytest.mark.slow
def test_w_transverse_mass_has_its_edge_near_80():
    res = _sample("adc_background", "adc_w", 200)
    p = res["particles"]
    lep = np.where((p[:, 1, 0] >= p[:, 5, 0])[:, None], p[:, 1], p[:, 5])
    met = p[:, 0]
    mt = np.sqrt(2 * lep[:, 0] * met[:, 0] * (1 - np.cos(lep[:, 2] - met[:, 2])))
    # Jacobian peak below m_W, few events above it (the W width, tau decays fall below)
    hist, edges = np.histogram(mt, bins=np.arange(0, 125, 10))
    assert 50 <= edges[np.argmax(hist)] <= 80
    assert (mt > 90).mean() < 0.1 and (mt > 60).mean() > 0.3
    # W events: one lepton, MET ~ the neutrino, few jets
    n_lep = (p[:, 1:9, 0] > 0).sum(1)
    assert (n_lep == 1).mean() > 0.8 and np.median(met[:, 0]) > 20


@pytest.mark.slow
def test_a_to_4l_four_lepton_mass_at_50():
    res = _sample("ato4l", "ato4l", 60)
    p = res["particles"]
    n_lep = (p[:, 1:9, 0] > 0).sum(1)
    four = n_lep == 4
    assert four.mean() > 0.2  # 4 leptons in acceptance with pT > 3 GeV, isolated
    m4 = np.array([_pair_mass(ev[1:9][ev[1:9, 0] > 0]) for ev in p[four]])
    # FSR photons lower it a little: median within 2 GeV below 50, little above
    assert 47.0 < np.median(m4) <= 50.5 and (m4 > 52).mean() < 0.1
    assert np.all(res["features"][:, -1] == ADC_PROCESS_IDS["ato4l"])


@pytest.mark.slow
def test_multiplicities_per_process_are_plausible():
    ttbar = _sample("adc_background", "adc_ttbar", 30)["features"]
    w = _sample("adc_background", "adc_w", 60)["features"]
    lq = _sample("leptoquark", "leptoquark", 30)["features"]
    col = {k: i for i, k in enumerate(GENERATED_EVENT_FEATURES)}
    nj = {k: f[:, col["n_jets"]].mean() for k, f in (("tt", ttbar), ("w", w), ("lq", lq))}
    assert nj["tt"] > 3.0 and nj["w"] < 1.5 and nj["lq"] > nj["w"]
    assert np.all(ttbar[:, col["n_electrons"]] + ttbar[:, col["n_muons"]] >= 1)
    assert ttbar[:, col["ht"]].mean() > 3 * w[:, col["ht"]].mean()


@pytest.mark.slow
def test_same_seed_same_events_and_a_trigger_efficiency():
    a = _sample("htautau", "htautau", 8, seed=9)
    b = _sample("htautau", "htautau", 8, seed=9)
    c = _sample("htautau", "htautau", 8, seed=10)
    np.testing.assert_array_equal(a["particles"], b["particles"])
    assert not np.array_equal(a["particles"], c["particles"])
    assert 0 < a["stats"]["trigger_efficiency"] < 0.5  # a tau -> e/mu above 23 GeV is rare
    assert np.all(np.max(a["particles"][:, 1:9, 0], axis=1) > 23.0)


# --- the store, end to end (Ray) --------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_cli_generates_an_adc2021_store(tmp_path, capsys):
    from clrdist.cli import main
    from clrdist.data.store import open_store

    out = tmp_path / "adc.zarr"
    rc = main(["data", "generate", "adc_background", "ato4l", "--events", "20", "--seed", "5",
               "--out", str(out), "--shard-size", "10", "--workers", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    store = open_store(out)
    data = store.read_all()
    # the converter's schema: kind event, 19 slots of (pT, eta, phi), its label names
    assert store.kind == "event" and data["particles"].shape == (40, 19, 3)
    assert store.feature_names == GENERATED_EVENT_FEATURES
    assert store.label_names == ADC_LABELS
    assert np.bincount(data["label"]) .tolist() == [20, 20]
    assert np.all(data["mask"] == (data["particles"][..., 0] > 0))
    assert np.all(np.max(data["particles"][:, 1:9, 0], axis=1) > 23.0)  # the trigger
    prov = store.attrs["provenance"]
    assert prov["ecm"] == 13000.0 and prov["jet"]["R"] == 0.4
    assert prov["events"]["n_per_subprocess"] == {"adc_w": 12, "adc_qcd": 7, "adc_z": 1,
                                                  "ato4l": 20}
    ids = data["features"][:, -1]
    assert set(ids[data["label"] == 1]) == {ADC_PROCESS_IDS["ato4l"]}
    assert set(ids[data["label"] == 0]) == {0, 1, 2}
