"""CWoLa bump hunt on toy dijet data: Poisson fit, significance formula, failed fits, the
sculpting guard, flat efficiency, null toys and their extrapolation, injected signal, the f = 0
control and the leak tests (the hunt sees only the mixture)."""

import numpy as np
import pytest
from _eval_toys import dijet_toy
from scipy import special, stats

from clrdist.eval import bumphunt
from clrdist.eval.bumphunt import (
    MjjCorrelationError,
    Window,
    blind_scan,
    cwola_hunt,
    dijet_function,
    efficiency_flatness,
    fit_n_eff,
    fit_sidebands,
    global_significance,
    hunt_at_fractions,
    hunt_mixture,
    log_bins,
    mix_signal,
    mjj_dependence,
    significance,
    window_selections,
)

SR, RANGE = (3300.0, 3700.0), (2500.0, 6000.0)
FAST = dict(mjj_range=RANGE, sqrt_s=13000, n_bins=12, classifier="linear", k=3)


def _truth_counts(n_bins, scale):
    edges = log_bins(*RANGE, n_bins)
    yc = np.sqrt(edges[:-1] * edges[1:]) / 13000
    return edges, dijet_function(yc, np.log(scale), 8.0, 4.0) * np.diff(edges) / 13000


def test_significance_formula_limits():
    # no background uncertainty: the Poisson likelihood-ratio Z
    n, b = 130.0, 100.0
    assert significance(n, b, 0.0) == pytest.approx(np.sqrt(2 * (n * np.log(n / b) - (n - b))))
    # small uncertainty -> same; large uncertainty -> much smaller
    assert significance(n, b, 1e-4) == pytest.approx(significance(n, b, 0.0), rel=1e-4)
    assert significance(n, b, 20.0) < 0.6 * significance(n, b, 0.0)
    assert significance(80.0, 100.0, 5.0) < 0  # deficits are negative
    # large counts: ~ (n - b) / sqrt(b + sigma^2)
    assert significance(10300, 1e4, 50) == pytest.approx(300 / np.sqrt(1e4 + 2500), rel=0.03)
    assert np.isnan(significance(10.0, float("nan"), float("nan")))  # no prediction, no Z


def test_sideband_fit_recovers_smooth_spectrum():
    edges, truth = _truth_counts(20, 3e4)
    counts = np.random.default_rng(0).poisson(truth)
    fit = fit_sidebands(edges, counts, (6, 9), 13000)
    expected = truth[6:9].sum()
    assert fit.ok and fit.n_bkg == pytest.approx(expected, abs=3 * fit.sigma_bkg + 1)
    assert 0 < fit.sigma_bkg < 0.1 * expected
    assert 0.3 < fit.chi2_ndf < 2.5
    assert fit.params == pytest.approx([np.log(3e4), 8.0, 4.0], abs=3.0)


def test_poisson_fit_is_unbiased_in_sparse_bins_and_its_error_covers():
    """140 events over 14 fitted bins, the last ones below one event (eps = 0.01 selections):
    the Poisson likelihood's prediction is unbiased within 4% and its uncertainty has the right
    size (pulls of width ~1; at 40 events in all they widen to ~1.7, measured)."""
    edges, truth = _truth_counts(16, 30.0)
    expected = truth[6:8].sum()
    rng = np.random.default_rng(3)
    pulls, preds = [], []
    for _ in range(300):
        fit = fit_sidebands(edges, rng.poisson(truth), (6, 8), 13000)
        assert fit.ok
        preds.append(fit.n_bkg)
        pulls.append((fit.n_bkg - expected) / fit.sigma_bkg)
    assert truth.sum() < 150 and truth.min() < 0.5  # sparse indeed
    assert np.mean(preds) == pytest.approx(expected, rel=0.04)  # 1.3% statistical error
    assert 0.8 < np.std(pulls) < 1.3


def test_a_failed_fit_is_reported_not_zero(monkeypatch):
    edges = log_bins(*RANGE, 12)
    counts = np.zeros(12, int)
    counts[[0, 1, 5]] = [3, 2, 1]
    fit = fit_sidebands(edges, counts, (5, 7), 13000)
    assert not fit.ok and "populated bins" in fit.problem and np.isnan(fit.n_bkg)
    # in a hunt: a selection of 3 events cannot be fitted; the row says so and Z is nan, not 0
    monkeypatch.setattr(bumphunt.selection, "select", lambda score, fold, in_sb, eps: (
        np.ones(len(score), bool) if eps >= 1 else np.arange(len(score)) < 3))
    mjj, x, _ = dijet_toy(3000, 0, seed=2)
    m = cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", sqrt_s=13000,
                   efficiencies=(1.0, 0.01), figures=False)
    assert m.metrics["bumphunt_fit_ok_eps_0.01"] == 0.0 and m.metrics["bumphunt_fit_ok_eps_1"] == 1
    assert np.isnan(m.metrics["bumphunt_z_eps_0.01"])
    assert "populated bins" in m.tables["bumphunt_scan"][1]["fit_problem"]
    assert m.metrics["bumphunt_n_failed_fits"] == 1.0
    assert m.metrics["bumphunt_max_z"] == m.metrics["bumphunt_z_eps_1"]  # over the fits that worked


def test_background_only_toys_are_not_significant():
    zs = []
    for seed in range(4):
        mjj, x, _ = dijet_toy(30000, 0, seed=100 + seed)
        m = cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", seed=seed,
                       sqrt_s=13000, figures=False).metrics
        zs += [m[f"bumphunt_z_eps_{e}"] for e in ("1", "0.1", "0.01", "0.002")]
        # nothing learnt: the log loss of the SR share, which is well below ln 2 here
        assert m["bumphunt_val_logloss"] == pytest.approx(m["bumphunt_val_logloss_ref"], abs=0.005)
        assert m["bumphunt_val_logloss_ref"] < np.log(2) - 0.02
        assert abs(m["bumphunt_mjj_corr"]) < 0.05
    zs = np.array(zs)
    assert np.mean(np.abs(zs) < 2) >= 0.8
    assert abs(np.mean(zs)) < 0.8  # no systematic excess or deficit (16 values, sd ~ 1)
    assert stats.kstest(zs, "norm").pvalue > 0.01


def test_injected_signal_raises_significance():
    mjj, x, _ = dijet_toy(30000, 300, seed=7)
    res = cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", seed=0, sqrt_s=13000)
    m = res.metrics
    assert m["bumphunt_z_eps_0.01"] > 4
    assert m["bumphunt_z_eps_0.01"] > m["bumphunt_z_eps_1"] + 2
    assert m["bumphunt_max_z"] >= m["bumphunt_z_eps_0.01"]
    rows = res.tables["bumphunt_scan"]
    assert [r["eps"] for r in rows] == [1.0, 0.1, 0.01, 0.002]
    assert all(np.isfinite(r["chi2_ndf"]) and r["fit_ok"] for r in rows)
    assert set(res.figures) == {"bumphunt_mjj.png"}


def test_signal_region_must_fit():
    mjj, x, _ = dijet_toy(2000, 0, seed=1)
    with pytest.raises(ValueError, match="does not fit"):
        cwola_hunt(mjj, x, sr=(2500.0, 2700.0), mjj_range=RANGE, classifier="linear", sqrt_s=13000)


def _tracking(n, seed, strength):
    """Background-only toy whose first feature is ln m_jj plus noise (a representation that
    saw absolute pT)."""
    mjj, x, y = dijet_toy(n, 0, seed=seed)
    rng = np.random.default_rng(seed)
    lm = np.log(mjj)
    x[:, 0] = (lm - lm.mean()) / lm.std() + rng.normal(0, strength, n)
    return mjj, x, y


def test_mjj_dependence_measures_features_that_track_mjj():
    mjj, x, _ = dijet_toy(6000, 0, seed=4)
    assert abs(mjj_dependence(mjj, x).corr) < 0.05
    mjj, x, _ = _tracking(6000, 4, 0.3)
    dep = mjj_dependence(mjj, x)
    assert dep.corr > 0.9 and dep.r2 > 0.8


def test_hunt_refuses_features_that_predict_mjj_and_the_flatness_check_sees_the_sculpting():
    mjj, x, _ = _tracking(8000, 9, 0.3)
    raw = dict(FAST, decorrelate="none")
    with pytest.raises(MjjCorrelationError, match=r"correlation 0\.9\d+.*allow_mjj_correlated"):
        blind_scan(mjj, x, n_toys=0, **raw)
    with pytest.raises(MjjCorrelationError):  # the one-window hunt too (sideband events only)
        cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", sqrt_s=13000,
                   decorrelate="none")
    # overridden: it runs, says how correlated its inputs were, and its efficiency is not flat
    res = blind_scan(mjj, x, n_toys=0, allow_mjj_correlated=True, **raw)
    assert res.mjj_corr > 0.9 and res.mjj_corr_allowed
    assert res.flatness_p < 1e-6
    # the same spectrum with independent features: flat within errors
    mjj2, x2, _ = dijet_toy(8000, 0, seed=9)
    res2 = blind_scan(mjj2, x2, n_toys=0, **FAST)
    assert res2.flatness_p > 1e-3 and not res2.mjj_corr_allowed


def _bent(n, seed):
    """Background whose features' means track ln m_jj, nonlinearly: feature 0 a quadratic in
    ln m_jj (correlation ~0.9), feature 1 shifted with it."""
    mjj, x, y = dijet_toy(n, 0, seed=seed)
    u = np.log(mjj / 3000.0)
    x[:, 0] = 3 * u - 2 * u ** 2 + 0.3 * x[:, 0]
    x[:, 1] = x[:, 1] + 2 * u
    return mjj, x, y


def test_sideband_decorrelation_flattens_features_that_track_mjj_and_keeps_a_resonance():
    mjj, x, _ = _bent(8000, 9)
    assert mjj_dependence(mjj, x).corr > 0.8
    res = blind_scan(mjj, x, n_toys=0, **dict(FAST, decorrelate="sideband"))
    assert res.mjj_corr < 0.1 and not res.mjj_corr_allowed  # the guard sees decorrelated inputs
    assert res.flatness_p > 1e-3  # and the selections are flat where the raw ones sculpt
    raw = blind_scan(mjj, x, n_toys=0, allow_mjj_correlated=True, **FAST)  # as given (default)
    assert raw.flatness_p < 1e-6
    # fitted outside each SR only: a resonance whose events sit apart in feature 2 survives it
    ms, xs, _ = dijet_toy(0, 400, seed=10)  # at 3500 +- 150 GeV, feature 0 at +2.5
    u = np.log(ms / 3000.0)  # features 0 and 1 as the background's there, feature 2 apart
    xs[:, 2] = xs[:, 0]
    xs[:, 0] = 3 * u - 2 * u ** 2 + 0.3 * np.random.default_rng(12).normal(size=len(ms))
    xs[:, 1] = xs[:, 1] + 2 * u
    # (5% of the events, well apart in feature 2: strong enough to trip the guard by itself)
    withsig = blind_scan(np.r_[mjj, ms], np.r_[x, xs], n_toys=0, allow_mjj_correlated=True,
                         **dict(FAST, decorrelate="sideband"))
    best = withsig.windows[withsig.best[0]]
    assert withsig.edges[best.lo] <= 3500 <= withsig.edges[best.hi] and withsig.max_z > 5
    with pytest.raises(ValueError, match="decorrelate: 'pca'"):
        blind_scan(mjj, x, n_toys=0, **dict(FAST, decorrelate="pca"))


def test_decorrelation_ignores_the_events_it_does_not_fit_on():
    rng = np.random.default_rng(0)
    mjj = rng.uniform(2500, 6000, 4000)
    x = np.log(mjj)[:, None] + rng.normal(0, 0.1, (4000, 1))
    fit_on = (mjj < 3300) | (mjj > 3700)
    bumped = x.copy()
    bumped[~fit_on] += 5.0  # whatever the SR holds, it is not fitted: it stays 50 sd apart
    d0 = bumphunt.decorrelate_mjj(mjj, x, fit_on)
    bumped_out = bumphunt.decorrelate_mjj(mjj, bumped, fit_on)
    np.testing.assert_allclose(bumped_out[fit_on], d0[fit_on])
    np.testing.assert_allclose(bumped_out[~fit_on] - d0[~fit_on], 5.0)
    assert abs(np.corrcoef(np.log(mjj), d0[:, 0])[0, 1]) < 0.05 and abs(d0.std() - 0.1) < 0.01


def test_background_only_selection_efficiency_is_flat_in_mjj():
    """One model family and one threshold rule for every event: inside the SR, in the
    sidebands and in the bins outside both, the background efficiency is eps within errors."""
    mjj, x, _ = dijet_toy(40000, 0, seed=21)
    edges = log_bins(*RANGE, 16)
    b = np.clip(np.searchsorted(edges, mjj, side="right") - 1, 0, 15)
    w = Window(lo=7, hi=9, sb=2)
    sels, fs = window_selections(b, x, w, (0.1, 0.03), classifier="linear", seed=3)
    for eps, sel in sels.items():
        chi2, ndf, p = efficiency_flatness(b, sel, fs.fold, 16)
        assert 16 - 5 >= ndf >= 8 and p > 1e-3, (eps, chi2, ndf)
        inner = (b >= w.lo - w.sb) & (b < w.hi + w.sb)
        e_in, e_out = sel[inner].mean(), sel[~inner].mean()
        err = np.sqrt(eps * (1 - eps) * (1 / inner.sum() + 1 / (~inner).sum()))
        assert abs(e_in - e_out) < 3 * err, (eps, e_in, e_out)  # no step at the sideband edges
    # and the check fails a selection that prefers high m_jj
    rng = np.random.default_rng(0)
    biased = rng.random(len(b)) < 0.1 * (1 + 0.5 * (b - 7.5) / 8)
    assert efficiency_flatness(b, biased, fs.fold, 16)[2] < 1e-6
    # a different efficiency per fold is a normalisation, not a slope
    per_fold = rng.random(len(b)) < np.array([0.08, 0.1, 0.12, 0.09, 0.11])[fs.fold]
    assert efficiency_flatness(b, per_fold, fs.fold, 16)[2] > 1e-3


def test_n_eff_fit_recovers_independent_tests_and_extrapolates_beyond_the_toys():
    rng = np.random.default_rng(1)
    toys = rng.normal(size=(400, 12)).max(1)  # the maximum of 12 independent unit normals
    assert fit_n_eff(toys, 50) == pytest.approx(12, rel=0.15)
    # z = 4.5: no toy gets there, the fitted tail gives the exact answer 1 - Phi(4.5)^12
    sig = global_significance(4.5, toys, 50)
    exact = -np.expm1(12 * special.log_ndtr(4.5))
    assert sig.from_fit and sig.p == pytest.approx(exact, rel=0.2)
    assert sig.z > 3.0 > stats.norm.isf(1 / 401)  # beyond what 400 toys alone can say
    assert sig.ks_p > 0.01  # the model describes these toys
    # bounds that hold for any correlation: local p <= p <= n_tests * local p
    p_loc = stats.norm.sf(4.5)
    assert p_loc <= sig.p <= 50 * p_loc
    # inside the toys' range the empirical p is used
    mid = global_significance(1.5, toys, 50)
    assert not mid.from_fit and mid.p == pytest.approx((np.sum(toys >= 1.5) + 1) / 401)


def test_blind_scan_background_only_is_not_globally_significant():
    mjj, x, _ = dijet_toy(12000, 0, seed=5)
    res = blind_scan(mjj, x, n_toys=30, n_full_toys=2, seed=1, **FAST)
    assert len(res.windows) == 7 and res.z.shape == (7, 3)
    assert res.global_z < 2.0 and res.global_z <= res.max_z  # the look-elsewhere effect
    assert np.all(np.isfinite(res.full_toys_max_z)) and len(res.full_toys_max_z) == 2
    assert 1 <= res.significance.n_eff <= 21 and res.n_failed_fits == 0
    assert res.flatness_p > 1e-3


def test_global_significance_is_not_capped_by_the_toy_count():
    mjj, x, _ = dijet_toy(12000, 400, seed=6)
    # a signal this strong (3%, at 2.5 sigma in one feature) trips the m_jj check by itself
    with pytest.raises(MjjCorrelationError, match=r"gbdt regression .*R\^2 0\.0\d\d"):
        blind_scan(mjj, x, n_toys=20, seed=0, **FAST)
    res = blind_scan(mjj, x, n_toys=20, seed=0, allow_mjj_correlated=True, **FAST)
    assert res.max_z > 6 and res.significance.from_fit
    assert res.global_z > 4 > stats.norm.isf(1 / 21)  # 20 toys alone cap it at 1.67


@pytest.mark.slow
def test_blind_hunt_at_lhco_fractions_finds_the_resonance_without_labels():
    mjj, x, y = dijet_toy(20000, 1000, seed=8)
    res = hunt_at_fractions(mjj, x, y, n_toys=20, seed=0, figures=False, **FAST)
    m = res.metrics
    assert m["bumphunt_f_0.01_n_sig"] == round(0.01 / 0.99 * 20000)
    assert m["bumphunt_f_0.001_n_sig"] == 20 and m["bumphunt_f_0.01_n_bkg"] == 20000
    assert m["bumphunt_f_0_n_sig"] == 0 and m["bumphunt_f_0_global_z"] < 2  # the control
    # at 1% the scan picks the window holding the signal, and its excess survives the LEE
    assert m["bumphunt_f_0.01_best_sr_lo"] < 3500 < m["bumphunt_f_0.01_best_sr_hi"]
    assert m["bumphunt_f_0.01_signal_in_best_sr"] > 0.5
    assert m["bumphunt_f_0.01_max_local_z"] > 4 and m["bumphunt_f_0.01_global_z"] > 2.5
    assert m["bumphunt_f_0.01_global_z"] <= m["bumphunt_f_0.01_max_local_z"]
    rows = res.tables["bumphunt_scan"]
    assert {(r["fraction"], r["n_sig"]) for r in rows} == {(0.0, 0), (0.001, 20), (0.003, 60),
                                                          (0.01, 202)}


def test_a_fraction_with_no_signal_event_is_refused():
    mjj, x, y = dijet_toy(300, 50, seed=1)
    with pytest.raises(ValueError, match="none"):
        mix_signal(mjj[y == 0], x[y == 0], mjj[y == 1], x[y == 1], 0.001)


@pytest.mark.slow
def test_leak_the_hunt_sees_only_the_mixture():
    """Truth labels, shuffled labels and no labels give the same hunt: only the diagnostics
    that are computed after the window is chosen depend on them."""
    mjj, x, y = dijet_toy(12000, 400, seed=11)
    m, xx, truth = mix_signal(mjj[y == 0], x[y == 0], mjj[y == 1], x[y == 1], 0.01, seed=2)
    shuffled = np.random.default_rng(0).permutation(truth)
    kw = dict(sqrt_s=13000, mjj_range=RANGE, n_bins=12, classifier="linear", k=3, n_toys=10)
    runs = [hunt_mixture(m, xx, t, **kw) for t in (None, truth, shuffled)]
    (m0, r0), (m1, r1), (m2, r2) = runs
    for met, res in ((m1, r1), (m2, r2)):
        np.testing.assert_array_equal(res.z, r0.z)
        np.testing.assert_array_equal(res.toys_max_z, r0.toys_max_z)
        assert {k: v for k, v in met.items() if k in m0} == m0
    assert m1["bumphunt_signal_in_best_sr"] > 0.5 > m2["bumphunt_signal_in_best_sr"]


def test_without_the_guard_the_scan_is_the_same_and_refuses_nothing():
    mjj, x, _ = _tracking(4000, 3, 0.3)
    with_guard = blind_scan(mjj, x, n_toys=0, allow_mjj_correlated=True, **FAST)
    without = blind_scan(mjj, x, n_toys=0, guard=False, **FAST)  # would be refused with it
    np.testing.assert_array_equal(without.flat_p, with_guard.flat_p)
    np.testing.assert_array_equal(without.z, with_guard.z)
    assert np.isnan(without.mjj_corr) and not without.mjj_corr_allowed
