"""CWoLa bump hunt on toy dijet data: fit, significance formula, null toys and injected signal;
the blind scan (sliding windows, look-elsewhere toys, LHCO-like fractions, flat efficiency)."""

import numpy as np
import pytest
from _eval_toys import dijet_toy
from scipy import stats

from clrdist.eval.bumphunt import (
    Window,
    blind_scan,
    cwola_hunt,
    dijet_function,
    fit_sidebands,
    hunt_at_fractions,
    log_bins,
    significance,
    window_selections,
)

SR, RANGE = (3300.0, 3700.0), (2500.0, 6000.0)


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


def test_sideband_fit_recovers_smooth_spectrum():
    edges = log_bins(*RANGE, 20)
    yc = np.sqrt(edges[:-1] * edges[1:]) / 13000
    dy = np.diff(edges) / 13000
    truth = dijet_function(yc, np.log(3e4), 8.0, 4.0) * dy
    counts = np.random.default_rng(0).poisson(truth)
    fit = fit_sidebands(edges, counts, (6, 9), 13000)
    expected = truth[6:9].sum()
    assert fit.n_bkg == pytest.approx(expected, abs=3 * fit.sigma_bkg + 1)
    assert 0 < fit.sigma_bkg < 0.1 * expected
    assert 0.3 < fit.chi2_ndf < 2.5


def test_background_only_toys_are_not_significant():
    zs = []
    for seed in range(4):
        mjj, x, _ = dijet_toy(30000, 0, seed=100 + seed)
        m = cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", seed=seed,
                       sqrt_s=13000, figures=False).metrics
        zs += [m[f"bumphunt_z_eps_{e}"] for e in ("1", "0.1", "0.01", "0.002")]
        assert m["bumphunt_val_logloss"] == pytest.approx(np.log(2), abs=0.3)
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
    assert [r["eps"] for r in res.tables["bumphunt_scan"]] == [1.0, 0.1, 0.01, 0.002]
    assert set(res.figures) == {"bumphunt_mjj.png"}


def test_signal_region_must_fit():
    mjj, x, _ = dijet_toy(2000, 0, seed=1)
    with pytest.raises(ValueError, match="does not fit"):
        cwola_hunt(mjj, x, sr=(2500.0, 2700.0), mjj_range=RANGE, classifier="linear", sqrt_s=13000)


def test_background_only_selection_efficiency_is_flat_in_mjj():
    """One model family and one threshold rule for every event: inside the SR, in the
    sidebands and in the bins outside both, the background efficiency is eps within errors."""
    mjj, x, _ = dijet_toy(40000, 0, seed=21)
    edges = log_bins(*RANGE, 16)
    b = np.clip(np.searchsorted(edges, mjj, side="right") - 1, 0, 15)
    w = Window(lo=7, hi=9, sb=2)
    sels, _ = window_selections(b, x, w, (0.1, 0.03), classifier="linear", seed=3)
    n = np.bincount(b, minlength=16).astype(float)
    for eps, sel in sels.items():
        k = np.bincount(b[sel], minlength=16)
        pull = (k - eps * n) / np.sqrt(n * eps * (1 - eps))
        assert stats.chi2.sf(float(pull @ pull), len(n) - 1) > 1e-3, (eps, np.round(pull, 1))
        inner = (b >= w.lo - w.sb) & (b < w.hi + w.sb)
        e_in, e_out = sel[inner].mean(), sel[~inner].mean()
        err = np.sqrt(eps * (1 - eps) * (1 / inner.sum() + 1 / (~inner).sum()))
        assert abs(e_in - e_out) < 3 * err, (eps, e_in, e_out)  # no step at the sideband edges


def test_blind_scan_background_only_is_not_globally_significant():
    mjj, x, _ = dijet_toy(12000, 0, seed=5)
    res = blind_scan(mjj, x, mjj_range=RANGE, sqrt_s=13000, n_bins=12, classifier="linear", k=3,
                     n_toys=20, seed=1)
    assert len(res.windows) == 7 and res.z.shape == (7, 3)
    assert res.global_p == pytest.approx((np.sum(res.toys_max_z >= res.max_z) + 1) / 21)
    assert res.global_z < 2.0 and res.global_z <= res.max_z  # the look-elsewhere effect


def test_blind_hunt_at_lhco_fractions_finds_the_resonance_without_labels():
    mjj, x, y = dijet_toy(20000, 1000, seed=8)
    res = hunt_at_fractions(mjj, x, y, sqrt_s=13000, mjj_range=RANGE, n_bins=12,
                            classifier="linear", k=3, n_toys=20, seed=0, figures=False)
    m = res.metrics
    assert m["bumphunt_f_0.01_n_sig"] == round(0.01 / 0.99 * 20000)
    assert m["bumphunt_f_0.001_n_sig"] == 20 and m["bumphunt_f_0.01_n_bkg"] == 20000
    # at 1% the scan picks the window holding the signal, and its excess survives the LEE
    assert m["bumphunt_f_0.01_best_sr_lo"] < 3500 < m["bumphunt_f_0.01_best_sr_hi"]
    assert m["bumphunt_f_0.01_signal_in_best_sr"] > 0.5
    assert m["bumphunt_f_0.01_max_local_z"] > 4 and m["bumphunt_f_0.01_global_z"] > 1.5
    assert m["bumphunt_f_0.01_global_z"] <= m["bumphunt_f_0.01_max_local_z"]
    assert {r["fraction"] for r in res.tables["bumphunt_scan"]} == {0.001, 0.003, 0.01}
