"""Idealised CWoLa scan on Gaussians: f = 0 is chance, large f approaches the supervised AUC."""

import numpy as np
import pytest
from scipy.stats import norm

from clrdist.eval.cwola import idealised_cwola_scan, mixed_sample, split_for_cwola


def gaussians(n_bkg, n_sig, d=2.0, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_bkg + n_sig, dim))
    y = np.r_[np.zeros(n_bkg, np.int8), np.ones(n_sig, np.int8)]
    x[y == 1, 0] += d
    return x, y


def test_splits_are_disjoint_and_fractions_exact():
    y = np.r_[np.zeros(900, int), np.ones(300, int)]
    parts = split_for_cwola(y, seed=1)
    allidx = np.concatenate(parts)
    assert allidx.size == np.unique(allidx).size == 1200
    b1, _, s_pool, _, _ = parts
    rng = np.random.default_rng(0)
    idx, n_s, n_b = mixed_sample(b1, s_pool, 0.1, rng)
    assert n_s == 30 and n_b == 270 and idx.size == 300
    _, n_s, n_b = mixed_sample(b1, s_pool, 1.0, rng)
    assert n_b == 0 and n_s == 200


def test_cwola_f0_is_consistent_with_chance():
    # At f = 0 the classifier learns noise; its test AUC scatters widely around 0.5 (the signal
    # sits d' = 2 away, so a random direction can rank it either way). Over repeats with fresh
    # disjoint background splits the mean is 0.5 within its standard error.
    x, y = gaussians(6000, 3000)
    n = 12
    m = idealised_cwola_scan(x, y, fractions=(0.0,), classifiers=("linear",), n_repeats=n,
                             figures=False).metrics
    se = m["cwola_linear_auc_std_f_0"] / np.sqrt(n)
    assert 0.02 < se < 0.1
    assert abs(m["cwola_linear_auc_f_0"] - 0.5) < 3 * se


def test_cwola_scan_finds_signal():
    x, y = gaussians(6000, 3000)
    res = idealised_cwola_scan(x, y, fractions=(0.0, 0.2, 1.0), classifiers=("linear",),
                               n_repeats=2)
    m = res.metrics
    supervised = norm.cdf(2.0 / np.sqrt(2))
    assert m["cwola_linear_auc_f_1"] == pytest.approx(supervised, abs=0.01)
    assert m["cwola_linear_auc_f_0.2"] == pytest.approx(supervised, abs=0.02)
    assert m["cwola_linear_max_sic_f_0.2"] > 2
    assert "cwola_linear_auc_std_f_0.2" in m
    assert [r["f"] for r in res.tables["cwola_scan"]] == [0.0, 0.2, 1.0]
    assert set(res.figures) == {"cwola_auc_vs_f.png", "cwola_sic_vs_f.png"}


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
def test_cwola_mlp_on_nonlinear_signal():
    # signal is a shell |x| ~ 3: invisible to a linear classifier, found by the 64-32 network
    rng = np.random.default_rng(3)
    bkg = rng.normal(size=(4500, 2))
    sig = rng.normal(size=(1500, 2))
    sig = 3 * sig / np.linalg.norm(sig, axis=1, keepdims=True) + rng.normal(0, 0.2, (1500, 2))
    x, y = np.r_[bkg, sig], np.r_[np.zeros(4500, int), np.ones(1500, int)]
    res = idealised_cwola_scan(x, y, fractions=(0.3,), n_repeats=1, figures=False)
    m = res.metrics
    assert m["cwola_mlp_auc_f_0.3"] > 0.9
    assert m["cwola_linear_auc_f_0.3"] < 0.7
