"""Baselines: jet observables as the stores define them, classifiers on two-prong vs one-prong toys."""

import numpy as np
import pytest
from _eval_toys import TinyDeepSet, mixed, prong_jets

from clrdist.eval.baselines import (
    centred,
    efp_features,
    jet_observables,
    raw_features,
    run_baselines,
)
from clrdist.physics.observables import (
    jet_kinematics,
    nsubjettiness_of_p4,
    p4_from_pt_eta_phi,
    tau_ratios,
)


def test_centring_wraps_phi_and_raw_features_are_pt_ordered():
    d = prong_jets(50, 1, seed=0)
    c = centred(d["particles"], d["mask"])
    w = c[..., 0] / c[..., 0].sum(1, keepdims=True)
    assert np.abs((w * c[..., 1]).sum(1)).max() < 1e-9
    assert np.abs((w * c[..., 2]).sum(1)).max() < 1e-9
    assert np.abs(c[..., 2]).max() < 0.5  # no 2 pi jumps for jets at phi ~ 3.0
    r = raw_features(d["particles"], d["mask"]).reshape(50, -1, 3)
    assert np.all(np.diff(r[..., 0], axis=1) <= 0)


def test_n_subjettiness_separates_prongs():
    one = jet_observables(prong_jets(200, 1, seed=1))
    two = jet_observables(prong_jets(200, 2, seed=2))
    assert np.median(two[:, 1]) < 0.6 * np.median(one[:, 1])  # tau21 small for 2 prongs
    assert np.median(two[:, 0]) > 2 * np.median(one[:, 0])  # and the jet mass large


def test_computed_observables_are_the_stores_definition():
    """Without store features, jet_obs is what generate/convert store: exclusive-kT tau ratios."""
    d = prong_jets(60, 2, seed=5)
    p, m = d["particles"].astype(np.float64), d["mask"]
    cons = [p4_from_pt_eta_phi(*p[i][m[i]].T) for i in range(len(p))]  # as the generator holds them
    t21, t32 = tau_ratios(nsubjettiness_of_p4(cons, r0=0.8))
    mass = jet_kinematics(np.stack([c.sum(0) for c in cons]))[:, 3]
    np.testing.assert_allclose(jet_observables(d), np.stack([mass, t21, t32], 1), rtol=1e-9, atol=1e-12)


def test_store_features_used_when_present():
    d = prong_jets(10, 1, seed=3)
    d["features"] = np.arange(40, dtype=np.float32).reshape(10, 4)
    obs = jet_observables(d, ["jet_pt", "tau21", "jet_mass", "tau32"])
    np.testing.assert_array_equal(obs[:, 0], d["features"][:, 2])
    np.testing.assert_array_equal(obs[:, 2], d["features"][:, 3])


def test_efps_degree_5():
    d = prong_jets(5, 2, seed=4)
    x = efp_features(d["particles"], d["mask"])
    assert x.shape == (5, 102)  # all EFPs with d <= 5 (54 connected)
    np.testing.assert_allclose(x[:, 0], 1.0)  # the d=0 EFP of normalised energies


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
def test_baselines_on_prong_toys():
    tr, te = mixed(200, seed=0), mixed(200, seed=10)
    res = run_baselines(tr, te, which=["raw", "jet_obs", "efp"], rep_train=None, rep_test=None)
    m = res.metrics
    assert m["baseline_jet_obs_auc"] > 0.95
    assert m["baseline_efp_auc"] > 0.95
    assert 0.5 < m["baseline_raw_auc"] < m["baseline_efp_auc"]
    assert m["baseline_efp_n_test"] == 400
    assert set(res.figures) == {"baselines_roc.png", "baselines_sic.png"}


def test_supervised_baseline_learns_and_stops_when_converged():
    tr, te = mixed(300, seed=20), mixed(200, seed=30)
    # 30% of the training labels flipped: the held-out loss bottoms out, then overfits
    flip = np.random.default_rng(0).random(len(tr["label"])) < 0.3
    tr["label"] = np.where(flip, 1 - tr["label"], tr["label"]).astype(np.int8)
    rep = np.zeros((600, 2))
    res = run_baselines(tr, te, which=["supervised"], model_factory=TinyDeepSet,
                        supervised_max_epochs=1000, rep_train=rep, rep_test=np.zeros((400, 2)))
    m = res.metrics
    assert m["baseline_supervised_auc"] > 0.8
    # stopped `patience` (8) epochs after the best held-out loss, long before the cap
    assert m["baseline_supervised_epochs"] == m["baseline_supervised_best_epoch"] + 8
    assert m["baseline_supervised_epochs"] < 1000
    with pytest.raises(KeyError, match="known"):
        run_baselines(tr, te, which=["nope"])


def test_dijet_store_observables_and_event_defaults():
    d = prong_jets(10, 2, seed=6)
    names = ["m_jj", "m_J1", "m_J2", "tau21_J1", "tau32_J1", "tau21_J2", "tau32_J2"]
    d["features"] = np.arange(70, dtype=np.float32).reshape(10, 7)
    obs = jet_observables(d, names)
    assert obs.shape == (10, 6)
    np.testing.assert_array_equal(obs[:, 3], d["features"][:, 5])  # tau21_J2
    tr, te = mixed(100, seed=40), mixed(100, seed=41)
    m = run_baselines(tr, te, kind="event", figures=False).metrics
    assert "baseline_raw_auc" in m and "baseline_jet_obs_auc" not in m


def test_the_supervised_encoder_joins_the_lct_and_anomaly_comparison_figures():
    from clrdist.eval.baselines import SUPERVISED_LABEL
    from clrdist.eval.runner import Context, run_evaluations

    def encode(batch):  # jet observables as a stand-in representation
        obs = jet_observables(batch)
        return np.c_[np.log(obs[:, 0] + 1), obs[:, 1:]]

    tr, te = mixed(200, seed=50), mixed(200, seed=51)
    ctx = Context(n_boot=0, model_factory=TinyDeepSet, init_encode=encode, n_particles=10)
    res = run_evaluations(encode, train_data=tr, test_data=te,
                          which={"lct", "baselines", "anomaly"}, context=ctx,
                          options={"baselines": {"which": ["supervised"],
                                                 "supervised_max_epochs": 20},
                                   "anomaly": {"methods": ["znorm"]}})
    for evaluation, figure in (("lct", "lct_roc.png"), ("anomaly", "anomaly_znorm_roc.png")):
        legend = res[evaluation].figures[figure].axes[0].get_legend().texts
        assert {t.get_text() for t in legend} == {"trained", "untrained (init seed 0)",
                                                   "raw inputs", SUPERVISED_LABEL, "random"}


def test_baselines_carry_bootstrap_errors_like_the_lct():
    """Every baseline row of a table gets the LCT's bootstrap error (test-set resamples,
    clrdist.eval.metrics.bootstrap_metrics); the values themselves do not change."""
    tr, te = mixed(200, seed=0), mixed(200, seed=10)
    plain = run_baselines(tr, te, which=["raw", "jet_obs"], figures=False).metrics
    assert not [k for k in plain if k.endswith("_std")]  # n_boot = 0: none
    m = run_baselines(tr, te, which=["raw", "jet_obs"], figures=False, n_boot=20).metrics
    for name in ("raw", "jet_obs"):
        for metric in ("auc", "inv_eps_b_at_0.5", "max_sic"):
            key = f"baseline_{name}_{metric}"
            assert m[key] == plain[key] and f"{key}_std" in m, key
        assert 0.0 < m[f"baseline_{name}_auc_std"] < 0.05
    # seeded: the same run gives the same errors
    again = run_baselines(tr, te, which=["raw"], figures=False, n_boot=20).metrics
    assert again["baseline_raw_auc_std"] == m["baseline_raw_auc_std"]
