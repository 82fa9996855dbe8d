"""Conditional whitening of per-jet features against the jet's own pT
(clrdist.eval.bumphunt.whiten_given_jet_pt): what it guarantees, and that it stops a CWoLa hunt
from sculpting when the features track the jets' pT, without hiding a resonance."""

import numpy as np
import pytest
from _eval_toys import dijet_toy

from clrdist.eval.bumphunt import (
    blind_scan,
    mjj_dependence,
    whiten_dijet_given_jet_pt,
    whiten_given_jet_pt,
)

FAST = dict(mjj_range=(2500.0, 6000.0), sqrt_s=13000, n_bins=12, classifier="linear", k=3)


def _jets(n, seed, d=3):
    """Jets whose features' means, spreads and correlations all change with ln pT."""
    rng = np.random.default_rng(seed)
    pt = np.exp(rng.uniform(np.log(1200), np.log(3000), n))
    u = np.log(pt / 1200.0)
    z = rng.normal(size=(n, d))
    x = np.stack([2 * u + (1 + u) * z[:, 0], z[:, 1] + u * z[:, 0], z[:, 2] - u], 1)
    return x, pt


def _bins(pt, n_bins=10):
    lpt = np.log(pt)
    return np.searchsorted(np.quantile(lpt, np.linspace(0, 1, n_bins + 1)[1:-1]), lpt,
                           side="right")


def test_every_pt_bin_ends_with_mean_zero_and_unit_covariance():
    x, pt = _jets(20000, 0)
    w = whiten_given_jet_pt(x, pt)
    for k in range(10):
        s = _bins(pt) == k
        assert s.sum() == 2000
        np.testing.assert_allclose(w[s].mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(np.cov(w[s], rowvar=False), np.eye(3), atol=1e-6)
    # before: the mean, the spread and a correlation move with pT; after: none of them
    lpt = np.log(pt)
    assert np.corrcoef(lpt, x[:, 0])[0, 1] > 0.3 and np.corrcoef(lpt, x[:, 0] ** 2)[0, 1] > 0.3
    for j in range(3):
        assert abs(np.corrcoef(lpt, w[:, j])[0, 1]) < 0.05
        assert abs(np.corrcoef(lpt, w[:, j] ** 2)[0, 1]) < 0.05
    assert mjj_dependence(pt, x).corr > 0.4 and abs(mjj_dependence(pt, w).corr) < 0.1


def test_it_is_equivariant_under_jet_order_and_blind_to_the_pt_scale():
    x, pt = _jets(3000, 1)
    w = whiten_given_jet_pt(x, pt)
    perm = np.random.default_rng(2).permutation(len(x))
    np.testing.assert_allclose(whiten_given_jet_pt(x[perm], pt[perm]), w[perm], atol=1e-12)
    np.testing.assert_allclose(whiten_given_jet_pt(x, 7.5 * pt), w, atol=1e-12)


def test_a_localised_signal_keeps_its_separation():
    x, pt = _jets(20000, 3)
    rng = np.random.default_rng(4)
    n_sig = 300  # 1.5% of the jets, all at pT ~ 1750 GeV: ~10% of their pT bin
    xs = np.stack([rng.normal(size=n_sig), rng.normal(size=n_sig), rng.normal(size=n_sig)], 1)
    pts = rng.normal(1750, 40, n_sig)
    us = np.log(pts / 1200.0)
    xs = np.stack([2 * us + (1 + us) * xs[:, 0], xs[:, 1] + us * xs[:, 0], xs[:, 2] - us + 3.0], 1)
    w = whiten_given_jet_pt(np.r_[x, xs], np.r_[pt, pts])
    wb, ws = w[: len(x)], w[len(x):]
    near = np.abs(np.log(pt / 1750.0)) < 0.05  # background jets at the signal's pT
    # feature 2: 3 sd apart before; whitened, still well over 2.5 sd of the background there
    sep = (ws[:, 2].mean() - wb[near, 2].mean()) / wb[near, 2].std()
    assert sep > 2.5


def test_dijet_form_whitens_each_jet_against_its_own_pt():
    x1, pt1 = _jets(4000, 5)
    x2, pt2 = _jets(4000, 6)
    w = whiten_dijet_given_jet_pt(np.c_[x1, x2], pt1, pt2)
    both = whiten_given_jet_pt(np.r_[x1, x2], np.r_[pt1, pt2])
    np.testing.assert_allclose(w, np.c_[both[:4000], both[4000:]])


def test_bad_input_is_refused_with_the_reason():
    x, pt = _jets(60, 7)
    with pytest.raises(ValueError, match="each bin needs at least 8"):
        whiten_given_jet_pt(x, pt)
    with pytest.raises(ValueError, match="finite and > 0"):
        whiten_given_jet_pt(x, np.r_[0.0, pt[1:]], n_bins=2)
    with pytest.raises(ValueError, match=r"\(n, 2 D\)"):
        whiten_dijet_given_jet_pt(x, pt, pt)


def _dijets_tracking_pt(n_bkg, n_sig, seed):
    """Toy dijets: each jet's pT follows from m_jj and a random rapidity gap, and each jet's
    features track its pT (mean and spread) the way _jets' do; the signal's leading-jet feature
    2 sits 3 sd apart."""
    mjj, _, y = dijet_toy(n_bkg, n_sig, seed=seed)
    rng = np.random.default_rng(seed + 100)
    pts = []
    feats = []
    for _ in range(2):
        pt = mjj / (2 * np.cosh(rng.uniform(0, 1.3, len(mjj)))) * rng.uniform(0.9, 1.0, len(mjj))
        u = np.log(pt / 1200.0)
        z = rng.normal(size=(len(mjj), 3))
        feats.append(np.stack([2 * u + (1 + u) * z[:, 0], z[:, 1] + u * z[:, 0], z[:, 2] - u], 1))
        pts.append(pt)
    feats[0][y == 1, 2] += 3.0
    return mjj, np.c_[feats[0], feats[1]], pts[0], pts[1], y


def test_whitened_dijet_features_stop_the_sculpting_and_keep_the_resonance():
    mjj, x, pt1, pt2, _ = _dijets_tracking_pt(8000, 0, seed=11)
    raw = blind_scan(mjj, x, n_toys=0, allow_mjj_correlated=True, **FAST)
    assert raw.mjj_corr > 0.3 and raw.flatness_p < 1e-6  # as given: it sculpts
    w = whiten_dijet_given_jet_pt(x, pt1, pt2)
    flat = blind_scan(mjj, w, n_toys=0, **FAST)
    assert not flat.mjj_corr_allowed and flat.mjj_corr < 0.1 and flat.flatness_p > 1e-3
    # a resonance at 3500 GeV, 4% of the events, apart in one feature: found after whitening
    mjj, x, pt1, pt2, y = _dijets_tracking_pt(8000, 330, seed=12)
    res = blind_scan(mjj, whiten_dijet_given_jet_pt(x, pt1, pt2), n_toys=0,
                     allow_mjj_correlated=True, **FAST)
    best = res.windows[res.best[0]]
    assert res.edges[best.lo] <= 3500 <= res.edges[best.hi] and res.max_z > 4
