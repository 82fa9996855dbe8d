"""Linear classifier test on Gaussians whose separation is known in closed form."""

import numpy as np
import pytest
from scipy.stats import norm

from clrdist.eval.lct import linear_classifier_test

D_PRIME = 1.5


def gaussian_rep(n_per_class, dim=8, d=D_PRIME, seed=0):
    """Two unit Gaussians in `dim` dims, means d' apart along a fixed random direction, then
    rescaled and shifted per axis (the LCT standardises). Geometry fixed; `seed` draws samples."""
    geo = np.random.default_rng(1234)
    direction = geo.normal(size=dim)
    direction /= np.linalg.norm(direction)
    scale, shift = geo.uniform(0.1, 10, dim), geo.normal(0, 5, dim)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n_per_class, dim))
    y = np.repeat([0, 1], n_per_class)
    x[y == 1] += d * direction
    return x * scale + shift, y


def test_lct_recovers_gaussian_separation():
    xtr, ytr = gaussian_rep(5000, seed=0)
    xte, yte = gaussian_rep(20000, seed=1)
    res = linear_classifier_test(xtr, ytr, xte, yte, n_boot=20)
    m = res.metrics
    assert m["lct_auc"] == pytest.approx(norm.cdf(D_PRIME / np.sqrt(2)), abs=0.01)
    assert m["lct_inv_eps_b_at_0.5"] == pytest.approx(1 / norm.sf(D_PRIME), rel=0.1)
    assert m["lct_fpr_at_tpr_0.5"] == pytest.approx(norm.sf(D_PRIME), rel=0.1)
    assert 0 < m["lct_auc_std"] < 0.01
    assert m["lct_n_test"] == 40000
    assert set(res.figures) == {"lct_roc.png", "lct_sic.png"}


def test_lct_drops_unknown_labels_and_is_random_without_signal_info():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, 4))
    y = rng.integers(0, 2, 4000).astype(np.int8)
    y[:100] = -1
    res = linear_classifier_test(x[:2000], y[:2000], x[2000:], y[2000:], n_boot=0, figures=False)
    assert res.metrics["lct_auc"] == pytest.approx(0.5, abs=0.05)
    assert res.metrics["lct_n_train"] == 1900
    assert res.figures == {}
