"""CWoLa bump hunt on toy dijet data: fit, significance formula, null toys and injected signal."""

import numpy as np
import pytest
from _eval_toys import dijet_toy
from scipy import stats

from clrdist.eval.bumphunt import (
    cwola_hunt,
    dijet_function,
    fit_sidebands,
    log_bins,
    significance,
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
                       figures=False).metrics
        zs += [m[f"bumphunt_z_eps_{e}"] for e in ("1", "0.1", "0.01", "0.002")]
        assert m["bumphunt_val_logloss"] == pytest.approx(np.log(2), abs=0.3)
    zs = np.array(zs)
    assert np.mean(np.abs(zs) < 2) >= 0.8
    assert abs(np.mean(zs)) < 0.8  # no systematic excess or deficit (16 values, sd ~ 1)
    assert stats.kstest(zs, "norm").pvalue > 0.01


def test_injected_signal_raises_significance():
    mjj, x, _ = dijet_toy(30000, 300, seed=7)
    res = cwola_hunt(mjj, x, sr=SR, mjj_range=RANGE, classifier="linear", seed=0)
    m = res.metrics
    assert m["bumphunt_z_eps_0.01"] > 4
    assert m["bumphunt_z_eps_0.01"] > m["bumphunt_z_eps_1"] + 2
    assert m["bumphunt_max_z"] >= m["bumphunt_z_eps_0.01"]
    assert [r["eps"] for r in res.tables["bumphunt_scan"]] == [1.0, 0.1, 0.01, 0.002]
    assert set(res.figures) == {"bumphunt_mjj.png"}


def test_signal_region_must_fit():
    mjj, x, _ = dijet_toy(2000, 0, seed=1)
    with pytest.raises(ValueError, match="does not fit"):
        cwola_hunt(mjj, x, sr=(2500.0, 2700.0), mjj_range=RANGE, classifier="linear")
