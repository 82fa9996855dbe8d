"""Converters for the public layouts (clrdist.data.convert): toptag, LHCO and ADC2021 files,
written here exactly as the originals are (tests/_convert.py), read back sample by sample."""

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from _convert import adc_events, in_input_order, toy_dijet_rows, write_adc, write_lhco, write_toptag

from clrdist.data.convert import CONVERTER_VERSION, ConvertError, convert
from clrdist.data.schema import ADC_FEATURES, JET_FEATURES, LHCO_FEATURES
from clrdist.data.store import open_store
from clrdist.data.toy import toy_dataset


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(400, seed=3)


# -- toptag ---------------------------------------------------------------------------------------


def test_toptag_roundtrip_two_files(tmp_path, toy):
    a = write_toptag(tmp_path / "train.h5", toy["particles"][:500], toy["mask"][:500], toy["label"][:500])
    b = write_toptag(tmp_path / "val.h5", toy["particles"][500:], toy["mask"][500:], toy["label"][500:],
                     shuffle_slots=True)
    out = convert("toptag", [a, b], tmp_path / "tt.zarr", progress=False, block_rows=128,
                  chunk_size=64, shard_chunks=2)
    s = open_store(out)
    assert s.n == 800 and s.kind == "jet" and s.n_particles == 50
    assert s.feature_names == JET_FEATURES and s.label_names == {0: "qcd", 1: "top"}
    d = in_input_order(s)
    np.testing.assert_allclose(d["particles"], toy["particles"], rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(d["mask"], toy["mask"])
    np.testing.assert_array_equal(d["label"], toy["label"])
    np.testing.assert_allclose(d["features"], toy["features"], rtol=1e-4, atol=2e-3)
    prov = s.attrs["provenance"]
    assert prov["source"] == "toptag" and prov["converter_version"] == CONVERTER_VERSION
    assert [x["name"] for x in prov["sources"]] == ["train.h5", "val.h5"]
    for x, path in zip(prov["sources"], (a, b), strict=True):
        assert x["size"] == os.path.getsize(path)
        assert x["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [x["rows"] for x in prov["sources"]] == [500, 300]


def test_toptag_max_particles_keeps_hardest(tmp_path, toy):
    a = write_toptag(tmp_path / "t.h5", toy["particles"], toy["mask"], toy["label"], shuffle_slots=True)
    s = open_store(convert("toptag", [a], tmp_path / "t.zarr", max_particles=10, progress=False))
    d = in_input_order(s)
    assert d["particles"].shape == (800, 10, 3)
    np.testing.assert_allclose(d["particles"], toy["particles"][:, :10], rtol=2e-5, atol=2e-5)
    # jet features still use every constituent, not only the 10 kept
    np.testing.assert_allclose(d["features"][:, 3], toy["features"][:, 3], rtol=1e-4, atol=2e-3)


def test_toptag_fixed_format_also_reads(tmp_path, toy):
    path = tmp_path / "fixed.h5"
    write_toptag(tmp_path / "t.h5", toy["particles"][:40], toy["mask"][:40], toy["label"][:40])
    pd.read_hdf(tmp_path / "t.h5", "table").to_hdf(path, key="table")  # pandas 'fixed' format
    d = in_input_order(open_store(convert("toptag", [path], tmp_path / "f.zarr", progress=False)))
    np.testing.assert_allclose(d["particles"], toy["particles"][:40], rtol=2e-5, atol=2e-5)


# -- lhco -----------------------------------------------------------------------------------------


def _massless(pt, eta, phi):
    return np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1)


def _mass(p4):
    e, px, py, pz = p4.sum(0)
    return np.sqrt(max(e**2 - px**2 - py**2 - pz**2, 0))


def test_lhco_clustering_hand_checked(tmp_path):
    # J1: three particles near (0.3, 0.1); J2: two particles near (-0.4, pi - 0.1); far apart
    j1 = np.array([[900.0, 0.30, 0.10], [400.0, 0.45, 0.20], [150.0, 0.10, -0.15]])
    j2 = np.array([[700.0, -0.40, 3.00], [500.0, -0.55, 2.80]])
    row = np.zeros(3 * 700 + 1)
    parts = np.concatenate([j2, j1])  # file order is not pT order
    row[: parts.size] = parts.ravel()
    row[-1] = 1
    other = row.copy()
    other[-1] = 0
    path = write_lhco(tmp_path / "events_anomalydetection.h5", np.stack([row, other]), key="whatever")
    s = open_store(convert("lhco", [path], tmp_path / "lh.zarr", progress=False))
    assert s.kind == "dijet" and s.n_particles == 100 and s.feature_names == LHCO_FEATURES
    d = in_input_order(s)
    np.testing.assert_array_equal(d["label"], [1, 0])
    p, m, f = d["particles"][0], d["mask"][0], dict(zip(LHCO_FEATURES, d["features"][0], strict=True))
    np.testing.assert_allclose(p[:3], j1[np.argsort(-j1[:, 0])], rtol=1e-6)
    np.testing.assert_allclose(p[50:52], j2, rtol=1e-6)
    assert m.sum() == 5 and m[:3].all() and m[50:52].all()
    p1, p2 = _massless(*j1.T), _massless(*j2.T)
    assert f["m_J1"] == pytest.approx(_mass(p1), rel=1e-4)
    assert f["m_J2"] == pytest.approx(_mass(p2), rel=1e-4)
    assert f["m_jj"] == pytest.approx(_mass(np.concatenate([p1, p2])), rel=1e-4)
    assert f["pt_J1"] == pytest.approx(np.hypot(p1[:, 1].sum(), p1[:, 2].sum()), rel=1e-5)
    assert (f["n_J1"], f["n_J2"], f["n_particles"]) == (3, 2, 5)
    assert f["tau21_J2"] == 0 and f["tau32_J1"] == 0  # N constituents -> tau_N = 0
    # tau21 of J1 by hand: kT first merges the pair with the smallest min(pT^2) dR^2
    pt, eta, phi = j1.T
    pairs = [(0, 1), (0, 2), (1, 2)]
    dist = [min(pt[a], pt[b]) ** 2 * ((eta[a] - eta[b]) ** 2 + (phi[a] - phi[b]) ** 2) for a, b in pairs]
    a, b = pairs[int(np.argmin(dist))]
    merged = p1[a] + p1[b]
    ax_eta = 0.5 * np.log((merged[0] + merged[3]) / (merged[0] - merged[3]))
    ax_phi = np.arctan2(merged[2], merged[1])
    tau2 = (pt[a] * np.hypot(eta[a] - ax_eta, phi[a] - ax_phi)
            + pt[b] * np.hypot(eta[b] - ax_eta, phi[b] - ax_phi)) / (0.8 * pt.sum())
    tot = p1.sum(0)
    t_eta, t_phi = 0.5 * np.log((tot[0] + tot[3]) / (tot[0] - tot[3])), np.arctan2(tot[2], tot[1])
    tau1 = (pt * np.hypot(eta - t_eta, phi - t_phi)).sum() / (0.8 * pt.sum())
    assert f["tau21_J1"] == pytest.approx(tau2 / tau1, rel=1e-4)


def test_lhco_toy_dijets_and_black_box(tmp_path):
    a, _, rows = toy_dijet_rows(150, seed=4)
    f1 = write_lhco(tmp_path / "rnd.h5", rows, key="df")
    _, _, rows_bb = toy_dijet_rows(50, seed=9, label=False)
    f2 = write_lhco(tmp_path / "events_LHCO2020_BlackBox1.h5", rows_bb, key="bb")
    s = open_store(convert("lhco", [f1, f2], tmp_path / "lh.zarr", progress=False, block_rows=64))
    d = in_input_order(s)
    assert s.n == 200 and s.label_names == {-1: "unknown", 0: "background", 1: "signal"}
    np.testing.assert_array_equal(d["label"], np.r_[np.arange(150) % 2, np.full(50, -1)])
    f = d["features"]
    mj1 = f[:150, LHCO_FEATURES.index("m_J1")]
    # the harder (top-like) jet is J1; anti-kT recovers its toy mass in most events
    assert np.median(np.abs(mj1 - 3 * a["features"][:, 3])) < 0.05
    assert (np.abs(mj1 - 3 * a["features"][:, 3]) < 1).mean() > 0.7
    assert (f[:, LHCO_FEATURES.index("m_jj")] > 2500).all()
    assert s.attrs["provenance"]["sources"][1]["has_label"] is False


def test_lhco_event_with_one_jet(tmp_path):
    row = np.zeros(3 * 700 + 1)
    row[:6] = [800.0, 0.1, 0.2, 300.0, 0.2, 0.1]
    path = write_lhco(tmp_path / "one.h5", row[None, :])
    d = in_input_order(open_store(convert("lhco", [path], tmp_path / "one.zarr", progress=False)))
    f = dict(zip(LHCO_FEATURES, d["features"][0], strict=True))
    assert (f["n_J1"], f["n_J2"]) == (2, 0) and d["mask"][0, 50:].sum() == 0
    assert f["m_jj"] == pytest.approx(f["m_J1"], rel=1e-5) and f["m_J2"] == 0


# -- adc2021 --------------------------------------------------------------------------------------


def test_adc_layout_labels_features(tmp_path):
    bkg, sig = adc_events(300, 0), adc_events(100, 1)
    fb = write_adc(tmp_path / "background_for_training.h5", bkg)
    fs = write_adc(tmp_path / "leptoquark_LOWMASS_lepFilter_13TeV_filtered.h5", sig)
    s = open_store(convert("adc2021", [fb, fs], tmp_path / "adc.zarr", progress=False))
    d = in_input_order(s)
    assert s.kind == "event" and s.n_particles == 19 and s.feature_names == ADC_FEATURES
    np.testing.assert_array_equal(d["label"], np.r_[np.zeros(300), np.full(100, 2)])
    # one file per process, but the store is in random order: every stretch has both
    stored = s.read_all()["label"]
    assert s.attrs["provenance"]["order"]["seed"] == 0
    assert all(set(stored[a:a + 40].tolist()) == {0, 2} for a in range(0, 400, 40))
    assert not np.array_equal(stored, d["label"])
    x = np.concatenate([bkg, sig])
    np.testing.assert_allclose(d["particles"], x[..., :3].astype(np.float32))  # slots kept
    np.testing.assert_array_equal(d["mask"], x[..., 0] > 0)
    f = dict(zip(ADC_FEATURES, d["features"].T, strict=True))
    np.testing.assert_allclose(f["met"], x[:, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(f["n_muons"], (x[:, 5:9, 0] > 0).sum(1))
    np.testing.assert_allclose(f["ht"], x[:, 9:, 0].sum(1), rtol=1e-5)
    # a label can be given for files with other names
    renamed = write_adc(tmp_path / "mine.h5", sig)
    with pytest.raises(ConvertError, match="cannot tell the process from the file name"):
        convert("adc2021", [renamed], tmp_path / "x.zarr", progress=False)
    s2 = open_store(convert("adc2021", [renamed], tmp_path / "x.zarr", label=3, progress=False))
    assert set(s2.read_all()["label"]) == {3}
