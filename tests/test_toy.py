"""Synthetic jets: reproducible, physical ranges, separable but not by mass alone."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clrdist.data.schema import JET_FEATURES
from clrdist.data.store import open_store
from clrdist.data.toy import _jet_features, toy_dataset, toy_jets, write_toy_store


@pytest.fixture(scope="module")
def jets():
    return toy_dataset(4000, seed=11)


def test_reproducible_by_seed():
    a = toy_jets(300, "top", seed=5)
    b = toy_jets(300, "top", seed=5)
    c = toy_jets(300, "top", seed=6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["particles"], c["particles"])
    # the two classes use independent random streams for the same seed
    q = toy_jets(300, "qcd", seed=5)
    assert not np.allclose(a["features"][:, 1], q["features"][:, 1])


def test_shapes_dtypes_labels(jets):
    n = 8000
    assert jets["particles"].shape == (n, 50, 3) and jets["particles"].dtype == np.float32
    assert jets["mask"].shape == (n, 50) and jets["mask"].dtype == bool
    assert jets["label"].dtype == np.int8 and set(np.unique(jets["label"])) == {0, 1}
    assert (jets["label"] == 1).sum() == 4000
    assert jets["features"].shape == (n, len(JET_FEATURES))


def test_physical_ranges(jets):
    p, m, f = jets["particles"], jets["mask"], jets["features"]
    pt = p[..., 0]
    assert (pt[~m] == 0).all() and (p[~m] == 0).all() and (pt[m] > 0).all()
    # hardest first, padding at the end
    assert (np.diff(pt, axis=1) <= 1e-4).all()
    assert (m[:, :-1] >= m[:, 1:]).all()
    # jet kinematics: pT window, absolute eta/phi of the axis
    assert f[:, 0].min() >= 549.9 and f[:, 0].max() <= 650.1
    assert -2.2 < f[:, 1].min() < -1.8 and 1.8 < f[:, 1].max() < 2.2
    assert f[:, 2].min() < -3.0 and f[:, 2].max() > 3.0
    assert (np.abs(p[..., 2]) <= np.pi + 1e-6).all()
    # constituents within R = 0.8 of the generated axis, which the measured axis follows
    deta = p[..., 1] - f[:, 1:2]
    dphi = (p[..., 2] - f[:, 2:3] + np.pi) % (2 * np.pi) - np.pi
    dr = np.hypot(deta, dphi)[m]
    assert np.quantile(dr, 0.99) < 0.8 and dr.max() < 1.6
    # multiplicity ~20-50 of 50 slots
    nc = f[:, 4]
    np.testing.assert_array_equal(nc, m.sum(1))
    assert 20 <= np.median(nc) <= 45 and nc.min() >= 5 and nc.max() <= 50


def test_features_are_computed_from_constituents(jets):
    np.testing.assert_allclose(_jet_features(jets["particles"], jets["mask"]), jets["features"],
                               rtol=1e-5, atol=1e-3)


def test_masses_top_peaks_near_173_with_w_inside(jets):
    f, y = jets["features"], jets["label"]
    top_m, qcd_m = f[y == 1, 3], f[y == 0, 3]
    assert 160 < np.median(top_m) < 185
    assert np.median(qcd_m) < 110
    # the W: some pair of the three hardest subjets... approximated by the hardest two-prong
    # combination of constituents is too costly here; check the generator's W mass directly
    from clrdist.data.toy import _top_prongs

    rng = np.random.default_rng(0)
    n = 2000
    ppt, peta, pphi = _top_prongs(rng, n, np.full(n, 600.0), np.zeros(n), np.zeros(n))
    q = np.stack([ppt, peta, pphi], -1)[:, 1:]  # the two W daughters
    mw = _jet_features(q.astype(np.float32), np.ones((n, 2), bool))[:, 3]
    assert 76 < np.median(mw) < 85
    mt = _jet_features(np.stack([ppt, peta, pphi], -1).astype(np.float32), np.ones((n, 3), bool))[:, 3]
    assert 168 < np.median(mt) < 178


def test_not_separable_by_mass_alone_nor_trivially_linear(jets):
    f, y = jets["features"], jets["label"]
    auc_mass = roc_auc_score(y, f[:, 3])
    assert 0.78 < auc_mass < 0.92
    x = jets["particles"].reshape(len(y), -1) / 100.0
    tr, te = slice(0, 6000), slice(6000, None)
    clf = LogisticRegression(max_iter=300).fit(x[tr], y[tr])
    auc_lin = roc_auc_score(y[te], clf.decision_function(x[te]))
    assert 0.6 < auc_lin < 0.9


def test_write_toy_store_valid(tmp_path):
    # its wall-clock time (budget 2 s on an idle core) is measured by bench/quick_paths.py
    out = write_toy_store(tmp_path / "toy.zarr", n_per_class=10_000, seed=1)
    s = open_store(out)
    assert s.n == 20_000 and s.attrs["feature_names"] == JET_FEATURES
    assert s.attrs["provenance"]["seed"] == 1
    lab = s.read_all()["label"]
    assert (lab == 1).sum() == 10_000
    again = write_toy_store(tmp_path / "toy2.zarr", n_per_class=10_000, seed=1)
    np.testing.assert_array_equal(open_store(again).read(0, 500)["particles"],
                                  s.read(0, 500)["particles"])
