"""ROC metrics against closed forms on Gaussian scores."""

import numpy as np
import pytest
from scipy.stats import norm

from clrdist.eval.metrics import (
    EvalResult,
    auc,
    binary_labels,
    bootstrap_metrics,
    eps_tag,
    fpr_at_tpr,
    inv_eps_b_at,
    max_sic,
    roc,
    roc_metrics,
)

D_PRIME = 1.5


def gaussian_scores(n, d=D_PRIME, seed=0):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(0, 1, n), rng.normal(d, 1, n)])
    y = np.concatenate([np.zeros(n, int), np.ones(n, int)])
    return y, s


def analytic_max_sic(d, floor):
    t = np.linspace(-5, 8, 20001)
    eb, es = norm.sf(t), norm.sf(t - d)
    ok = eb >= floor
    return float(np.max(es[ok] / np.sqrt(eb[ok])))


def test_gaussian_scores_match_closed_forms():
    y, s = gaussian_scores(40000)
    r = roc(y, s)
    assert auc(y, s) == pytest.approx(norm.cdf(D_PRIME / np.sqrt(2)), abs=0.005)
    # eps_S = 0.5 <=> threshold at the signal median d' -> eps_B = 1 - Phi(d')
    assert inv_eps_b_at(r, 0.5) == pytest.approx(1 / norm.sf(D_PRIME), rel=0.05)
    t03 = D_PRIME + norm.ppf(0.7)
    assert inv_eps_b_at(r, 0.3) == pytest.approx(1 / norm.sf(t03), rel=0.07)
    assert fpr_at_tpr(r, 0.5) == pytest.approx(norm.sf(D_PRIME), rel=0.05)
    assert max_sic(r) == pytest.approx(analytic_max_sic(D_PRIME, 1e-3), rel=0.08)


def test_perfect_and_random_classifiers():
    y = np.array([0] * 500 + [1] * 500)
    r = roc(y, y.astype(float))
    assert auc(y, y) == 1.0
    # no background survives: rejection bounded by the number of background events, not inf
    assert inv_eps_b_at(r, 0.5) == 500.0
    rng = np.random.default_rng(1)
    yr, sr = rng.integers(0, 2, 50000), rng.random(50000)
    rr = roc(yr, sr)
    assert auc(yr, sr) == pytest.approx(0.5, abs=0.01)
    assert inv_eps_b_at(rr, 0.5) == pytest.approx(2.0, rel=0.05)


def test_max_sic_respects_statistics_floor():
    # one background event far in the signal tail would give a huge SIC without the floor
    y = np.array([0] * 1000 + [1] * 1000)
    s = np.concatenate([np.zeros(1000), np.ones(1000)])
    s[0] = 2.0
    r = roc(y, s)
    # only eps_B >= 10/1000 counts: the first point (1 bkg, 0 sig) is excluded
    assert max_sic(r) == pytest.approx(1.0, abs=1e-9)
    assert max_sic(r, eps_b_floor=0, min_bkg_events=1) == pytest.approx(0.0 / 1 + 1 / np.sqrt(1e-3))


def test_metric_names_and_labels():
    y, s = gaussian_scores(2000)
    m, _ = roc_metrics(y, s, "lct")
    assert set(m) == {"lct_auc", "lct_inv_eps_b_at_0.5", "lct_inv_eps_b_at_0.3",
                      "lct_inv_eps_b_at_0.2", "lct_max_sic", "lct_fpr_at_tpr_0.5"}
    assert eps_tag(0.002) == "0.002" and eps_tag(1.0) == "1"
    with pytest.raises(ValueError, match="MLflow-safe"):
        EvalResult(metrics={"lct auc@0.5": 1.0})
    keep, yb = binary_labels(np.array([-1, 0, 1, 2], dtype=np.int8))
    assert keep.tolist() == [False, True, True, True] and yb.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="both classes"):
        auc(np.zeros(10, int), np.arange(10))


def test_bootstrap_std_matches_hanley_mcneil():
    n = 3000
    y, s = gaussian_scores(n, seed=3)
    a = auc(y, s)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n))
    std = bootstrap_metrics(y, s, "x", n_boot=200, seed=0)
    assert std["x_auc_std"] == pytest.approx(se, rel=0.25)
    assert std["x_inv_eps_b_at_0.5_std"] > 0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 400), shift=st.floats(-2, 2))
def test_metrics_invariant_under_monotone_maps_and_rejection_monotone(seed, n, shift):
    y, s = gaussian_scores(n, d=shift, seed=seed)
    m1, r = roc_metrics(y, s, "a")
    m2, _ = roc_metrics(y, np.exp(0.5 * s) + 3.0, "a")  # strictly increasing map of the score
    for k in m1:
        assert m1[k] == pytest.approx(m2[k], rel=1e-9, abs=1e-12)
    rej = [inv_eps_b_at(r, e) for e in (0.2, 0.3, 0.5, 0.8)]
    assert all(a >= b - 1e-9 for a, b in zip(rej[:-1], rej[1:], strict=True))  # harder cut, more rejection
    assert 0.0 <= m1["a_auc"] <= 1.0 and m1["a_max_sic"] >= 0
