"""The simple calorimeter of ``--detector simple``: acceptance, granularity, resolution."""

from __future__ import annotations

import numpy as np
import pytest

from clrdist.data.detector import DETECTORS, SimpleCalorimeter


def _p4(pt, eta, phi, m=0.0):
    pt, eta, phi = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (pt, eta, phi))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return np.stack([px, py, pz, e], axis=1)


def _eta_phi(p4):
    pt = np.hypot(p4[:, 0], p4[:, 1])
    return np.arcsinh(p4[:, 2] / pt), np.arctan2(p4[:, 1], p4[:, 0])


def test_registry():
    assert DETECTORS["simple"] is SimpleCalorimeter
    d = SimpleCalorimeter().to_dict()
    assert d["name"] == "simple" and d["cell_eta"] == 0.1 and d["had_stochastic"] == 0.5


def test_cells_merge_particles_and_sit_on_grid():
    det = SimpleCalorimeter(had_stochastic=0, had_constant=0, em_stochastic=0, em_constant=0)
    rng = np.random.default_rng(0)
    # two pions in one cell, a photon in the neighbouring cell
    p4 = np.concatenate([_p4(30, 0.52, 0.01), _p4(20, 0.57, 0.04), _p4(10, 0.63, 0.03)])
    cells = det(p4, np.array([211, -211, 22]), rng)
    assert len(cells) == 2
    eta, phi = _eta_phi(cells)
    np.testing.assert_allclose(np.sort(eta), [0.55, 0.65], atol=1e-9)
    n_phi = round(2 * np.pi / 0.1)
    width = 2 * np.pi / n_phi  # 63 cells of 0.0997
    np.testing.assert_allclose(phi, -np.pi + (np.floor((0.03 + np.pi) / width) + 0.5) * width,
                               atol=1e-9)
    # without smearing the energy is conserved and cells are massless
    np.testing.assert_allclose(cells[:, 3].sum(), p4[:, 3].sum(), rtol=1e-12)
    m2 = cells[:, 3] ** 2 - (cells[:, :3] ** 2).sum(1)
    np.testing.assert_allclose(m2, 0, atol=1e-6)


def test_acceptance_threshold_and_muons():
    det = SimpleCalorimeter()
    rng = np.random.default_rng(1)
    p4 = np.concatenate([_p4(50, 5.2, 0.0), _p4(0.1, 0.0, 1.0), _p4(40, -1.0, 2.0, m=0.1057)])
    out = det(p4, np.array([211, 22, 13]), rng)
    # the forward pion is outside |eta| < 4.9, the 0.1 GeV photon below the 0.5 GeV threshold,
    # the muon passes unchanged
    assert len(out) == 1
    np.testing.assert_array_equal(out[0], p4[2])


@pytest.mark.parametrize(("pid", "energy", "a", "b"), [(211, 100.0, 0.50, 0.03),
                                                      (22, 50.0, 0.10, 0.01)])
def test_energy_resolution(pid, energy, a, b):
    det = SimpleCalorimeter()
    rng = np.random.default_rng(2)
    n = 4000
    p4 = _p4(energy, 0.0, 0.3)  # eta = 0: E = pT
    e = np.array([det(p4, np.array([pid]), rng)[0, 3] for _ in range(n)])
    expected = np.sqrt(a**2 / energy + b**2)
    # mean unbiased (log-normal with the right mean); width within 5% (stat. error ~1.1%)
    assert abs(e.mean() / energy - 1) < 4 * expected / np.sqrt(n)
    assert abs(e.std() / energy / expected - 1) < 0.05
    assert (e > 0).all()


def test_em_and_hadronic_sums_smeared_separately():
    rng = np.random.default_rng(3)
    det = SimpleCalorimeter(em_stochastic=0, em_constant=0)  # only hadrons smeared
    p4 = np.concatenate([_p4(60, 0.01, 0.01), _p4(40, 0.02, 0.02)])  # same cell
    e = np.array([det(p4, np.array([22, 211]), rng)[0, 3] for _ in range(3000)])
    had = np.sqrt(0.5**2 / 40 + 0.03**2) * 40
    assert abs(e.std() / had - 1) < 0.06
