"""The demo's NPLM line reads the metric names NPLM writes (a wrong key used to drop it)."""

import numpy as np

from clrdist.demo import nplm_line
from clrdist.eval.nplm import nplm_evaluation


def _metrics(**kw) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(size=(3000, 2)), rng.normal(size=(300, 2)) * 0.3 + 1.5]
    y = np.r_[np.zeros(3000, np.int8), np.ones(300, np.int8)]
    common = dict(n_ref=800, n_data=150, n_sig=30, n_toys_null=6, n_toys_sig=2, M=15,
                  figures=False)
    m = nplm_evaluation(x, y, **common, **kw).metrics
    return {**m, **nplm_evaluation(x, y, prefix="nplm_raw", **common, **kw).metrics}


def test_nplm_line_shows_the_metrics_nplm_writes():
    m = _metrics()
    line = nplm_line(m)
    key = "chi2" if "nplm_z_chi2_median" in m else "emp"
    want = m[f"nplm_z_{key}_median"], m[f"nplm_raw_z_{key}_median"]
    assert line is not None and "nan" not in line
    assert f"{want[0]:.2f}" in line and f"{want[1]:.2f}" in line
    # calibrated here: the chi2 line says how it differs from the table's empirical column
    assert key == "chi2" and "the table's empirical Z cannot exceed 1.43 with 12 null toys" in line
    # each median with its bootstrap error over the signal toys
    assert f"{want[0]:.2f} +- {m['nplm_z_chi2_median_std']:.2f}" in line


def test_the_empirical_z_is_bounded_by_the_null_toys():
    from scipy import stats

    from clrdist.eval.nplm import z_empirical, z_empirical_max

    t_null = np.arange(40.0)
    assert z_empirical_max(40) == z_empirical(np.array([1e9]), t_null)[0]
    assert z_empirical_max(40) == stats.norm.isf(1 / 41)


def test_an_uncalibrated_nplm_is_shown_with_its_empirical_z():
    m = _metrics(max_iter=1)  # Newton cut short: not converged, not calibrated, no chi2 Z
    assert "nplm_z_chi2_median" not in m
    line = nplm_line(m)
    assert line is not None and "empirical" in line and "nan" not in line
    assert f"{m['nplm_z_emp_median']:.2f}" in line


def test_no_nplm_no_line():
    assert nplm_line({"lct_auc": 0.9}) is None
