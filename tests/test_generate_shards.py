"""Pythia 8 + FastJet generation of single shards in process, no Ray
(clrdist.data.generation): the plan (config errors, seeds), a shard's progress and selection,
the physics of each process, and jets.py on hand-made jets.

Samples are small (a few hundred jets); tolerances are set from the sample statistics (see
each test). The store written through Ray is tests/test_generate.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from _generate import plan_of, robust_peak  # noqa: E402

from clrdist.data.generation import GenerationConfig, GenerationError  # noqa: E402
from clrdist.data.generation.events import generate_shard, make_pythia  # noqa: E402
from clrdist.data.generation.plan import ShardSpec  # noqa: E402
from clrdist.data.jets import JetDef, cluster_antikt, pack_constituents  # noqa: E402
from clrdist.data.schema import GENERATED_DIJET_FEATURES, generated_features  # noqa: E402

# --- the plan and one shard ------------------------------------------------------------------


def test_config_errors_name_the_field():
    with pytest.raises(GenerationError, match=r"^n_jets: Input should be greater than 0 \(got 0\)$"):
        GenerationConfig(processes=["qcd"], n_jets=0)
    with pytest.raises(GenerationError, match="^n_particle: unknown key$") as e:
        GenerationConfig(processes=["qcd"], n_jets=1, n_particle=3)
    assert e.value.problems == [("n_particle", "unknown key")]
    with pytest.raises(GenerationError) as e:
        GenerationConfig(processes=["resonance"], n_jets=1, resonance_masses=(500, 400, 200),
                         detector="delphes", r_inv=2)
    assert [f for f, _ in e.value.problems] == ["detector", "resonance_masses", "r_inv"]
    assert "--" not in str(e.value)


def test_shard_seeds_distinct_and_derived_from_seed():
    def seeds(seed):
        plan = plan_of(["top", "qcd"], 1000, seed=seed, ecm=14000, shard_size=100)
        return [(s.seed, s.detector_seed) for s in plan.shards]

    a = seeds(0)
    assert len(a) == 20 and len({s for s, _ in a}) == 20
    assert all(1 <= s <= 900_000_000 for s, _ in a)
    assert seeds(0) == a and set(seeds(1)).isdisjoint(a)


def test_shard_reports_progress_and_is_exact():
    plan = plan_of(["qcd"], 40, seed=8, n_particles=10, ecm=14000, shard_size=40)
    reports: list[int] = []
    res = generate_shard(plan.shards[0], reports.append)
    assert sum(reports) == 40 and len(reports) >= 10
    assert res["features"].shape == (40, 10) and res["stats"]["n_accepted"] == 40


def test_unreachable_selection_fails_with_message():
    spec = plan_of(["top"], 5, seed=0, jet=JetDef(0.8, 550, 650, 2.0), n_particles=10,
                 ecm=14000, shard_size=5).shards[0]
    spec = ShardSpec(**{**spec.__dict__, "max_events": 3})
    with pytest.raises(GenerationError, match="too tight"):
        generate_shard(spec)


# --- other processes (one shard each) ---------------------------------------------------------


def _shard(procs, n, **kw):
    plan = plan_of(procs, n, **{"seed": 3, "ecm": 14000.0, "shard_size": n, **kw})
    return plan, generate_shard(plan.shards[0])


def test_resonance_dijet_mjj_peak():
    plan, res = _shard(["resonance"], 150)
    assert plan.kind == "dijet"
    f = res["features"]
    assert res["particles"].shape == (150, 100, 3)
    # the leading jet's constituents first, then the subleading jet's
    assert res["mask"][:, 0].all() and res["mask"][:, 50].all()
    assert GENERATED_DIJET_FEATURES[:3] == ["m_jj", "m_J1", "m_J2"]
    mjj = f[:, 0]
    # m_jj peaks just below M (FSR out of the R = 1 cones); the interquartile range is ~5%
    assert abs(np.median(mjj) / 3500.0 - 1) < 0.05, np.median(mjj)
    assert abs(robust_peak(mjj) / 3500.0 - 1) < 0.05
    masses = np.sort(f[:, [1, 2]], axis=1)  # m_J1, m_J2 -> (lighter, heavier)
    assert abs(np.median(masses[:, 1]) - 500.0) < 50.0
    assert abs(np.median(masses[:, 0]) - 100.0) < 25.0


def test_qcd_follows_the_dijet_kind():
    plan = plan_of(["resonance", "qcd"], 60, seed=4, n_particles=20, ecm=14000, shard_size=60)
    assert plan.kind == "dijet" and plan.labels == {"qcd": 0, "resonance": 1}
    assert plan.jet == JetDef(R=1.0, pt_min=1200.0, pt_max=float("inf"), abs_eta_max=2.5)
    res = generate_shard(plan.shards[1])
    f = res["features"]
    assert f.shape == (60, len(GENERATED_DIJET_FEATURES)) and res["particles"].shape == (60, 40, 3)
    j1_pt, j1_eta, j2_pt, j2_eta = (f[:, GENERATED_DIJET_FEATURES.index(k)]
                                    for k in ("pt_J1", "eta_J1", "pt_J2", "eta_J2"))
    assert (j1_pt >= 1200).all() and (j2_pt <= j1_pt).all()
    assert (np.abs(j1_eta) < 2.5).all() and (np.abs(j2_eta) < 2.5).all()


def test_semivisible_jets_missing_pt_follows_r_inv():
    # a wide window (pT > 100 GeV) so the visible-pT selection barely biases the invisible
    # fraction; in-cone invisible pT fraction means measured: 0.03 (r_inv 0), 0.27 (0.3), 0.51
    # (0.75); spread ~0.25 -> standard error ~0.02 with 150 jets
    wide = JetDef(R=0.8, pt_min=100.0, pt_max=3000.0, abs_eta_max=2.0)
    means, mets = {}, {}
    for r_inv in (0.0, 0.3, 0.75):
        plan, res = _shard(["svj"], 150, jet=wide, r_inv=r_inv)
        f = res["features"]
        assert f.shape == (150, 12)  # JET_FEATURES + met, inv_frac
        means[r_inv] = f[:, 11].mean()
        mets[r_inv] = np.median(f[:, 10])
    assert means[0.0] < 0.1  # neutrinos from heavy-flavour decays only
    assert 0.15 < means[0.3] < 0.45
    assert 0.4 < means[0.75] < 0.85
    assert means[0.75] - means[0.3] > 0.12
    assert mets[0.75] > 5 * mets[0.0]


@pytest.mark.parametrize("r_inv", [0.3, 0.75])
def test_svj_dark_hadrons_invisible_energy_share_is_r_inv(r_inv):
    # generator level: the share of dark-hadron energy that decays to the stable invisible
    # states is r_inv (measured 0.29 / 0.78 on 200 events; ~1000 dark hadrons per 50 events)
    plan = plan_of(["svj"], 1, seed=7, r_inv=r_inv, ecm=14000, shard_size=1)
    pythia = make_pythia(plan.shards[0])
    e_inv = e_all = 0.0
    for _ in range(50):
        assert pythia.next()
        ev = pythia.event
        for q in ev:
            if q.idAbs() in (4900111, 4900113) and q.status() < 0:
                e_all += q.e()
                if ev[q.daughter1()].idAbs() in (51, 53):
                    e_inv += q.e()
    assert abs(e_inv / e_all - r_inv) < 0.07


def test_w_jets_mass_peak_and_two_prongs():
    plan, res = _shard(["w"], 100)
    assert plan.labels == {"w": 1} and plan.shards[0].match_truth
    f = res["features"]
    names = generated_features("jet")
    pt, mass = f[:, names.index("jet_pt")], f[:, names.index("jet_mass")]
    assert ((550 <= pt) & (pt <= 650)).all()
    # truth-matched W -> q q' jets: the mass peaks at m_W, not at QCD's few tens of GeV
    assert abs(robust_peak(mass[(mass > 40) & (mass < 140)]) - 80.4) < 8.0
    q25, q75 = np.percentile(mass, [25, 75])
    assert q75 - q25 < 20.0  # a narrow peak (QCD jets in this window spread over ~50 GeV)
    # two prongs: tau2 / tau1 well below QCD's ~0.7
    tau21 = f[:, names.index("tau21")]
    assert np.median(tau21) < 0.5


def test_detector_simple_top_mass_still_peaks():
    plan, res = _shard(["top"], 150, detector="simple")
    mass = res["features"][:, 3]
    assert abs(robust_peak(mass[(mass > 100) & (mass < 300)]) - 173.0) < 20.0
    # cells sit on the 0.1 x 0.1 grid (eta centres at -4.9 + 0.1 (k + 1/2))
    eta = res["particles"][..., 1][res["mask"]]
    k = (eta + 4.9) / 0.1 - 0.5
    assert np.mean(np.abs(k - np.round(k)) < 1e-3) > 0.97  # muons are off-grid


# --- jets.py on hand-made jets ----------------------------------------------------------------


def _prong(rng, eta, phi, pt, n, width=0.02):
    e = eta + rng.normal(0, width, n)
    f = phi + rng.normal(0, width, n)
    p = np.full(n, pt / n)
    return np.stack([p * np.cos(f), p * np.sin(f), p * np.sinh(e), p * np.cosh(e)], axis=1)


def test_pack_and_cluster():
    rng = np.random.default_rng(1)
    jet_a = _prong(rng, 0.0, 0.0, 500, 80)
    jet_b = _prong(rng, 1.5, 3.0, 200, 10)
    event = np.concatenate([jet_b, jet_a])
    jets = cluster_antikt(event, 0.8, pt_min=50)
    assert len(jets) == 2
    assert sorted(jets[0][1].tolist()) == list(range(10, 90))
    parts, mask = pack_constituents(event[jets[0][1]], 50)
    assert parts.shape == (50, 3) and mask.all()
    assert (np.diff(parts[:, 0]) <= 0).all()
