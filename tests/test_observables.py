"""clrdist.physics.observables: closed forms, symmetries and the N-subjettiness definition.

Jet mass and N-subjettiness are checked against hand computations and against the symmetries
they must have (longitudinal boosts, rotations about the beam, the phi seam, zero padding); the
padded-table and list-of-four-vector entry points of N-subjettiness must agree.
"""

import numpy as np
import pytest

from clrdist.data.toy import toy_jets
from clrdist.physics.observables import (
    delta_phi,
    delta_r,
    efps,
    invariant_mass,
    jet_kinematics,
    jet_mass,
    jet_p4,
    m_jj,
    nsubjettiness,
    nsubjettiness_of_p4,
    p4_from_pt_eta_phi,
    pt_eta_phi,
    rapidity,
    tau_ratios,
    wrap_phi,
)

pytest.importorskip("fastjet")


def _tables(jets):
    p = jets["particles"].astype(np.float64)
    return p[..., 0], p[..., 1], p[..., 2], jets["mask"]


def _prong(rng, eta, phi, pt, n, width=0.02):
    """n massless particles (n, 4) sharing pt, spread by `width` around (eta, phi)."""
    return p4_from_pt_eta_phi(np.full(n, pt / n), eta + rng.normal(0, width, n),
                              phi + rng.normal(0, width, n))


@pytest.fixture(scope="module")
def tops():
    return toy_jets(200, "top", seed=1)


# --- angles and four-vectors ----------------------------------------------------------------

def test_phi_wrapping():
    assert delta_phi(3.1, -3.1) == pytest.approx(6.2 - 2 * np.pi, abs=1e-12)  # across the seam
    assert delta_phi(-3.1, 3.1) == pytest.approx(2 * np.pi - 6.2, abs=1e-12)
    x = np.linspace(-20, 20, 1001)
    w = wrap_phi(x)
    assert ((w >= -np.pi) & (w < np.pi)).all()
    np.testing.assert_allclose(np.cos(w), np.cos(x), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(x), atol=1e-12)
    assert delta_r(0.0, np.pi - 0.1, 0.3, -np.pi + 0.3) == pytest.approx(0.5, rel=1e-12)


def test_kinematics_round_trip_and_rapidity():
    rng = np.random.default_rng(2)
    pt, eta, phi = rng.uniform(1, 500, 100), rng.uniform(-3, 3, 100), rng.uniform(-np.pi, np.pi, 100)
    p4 = p4_from_pt_eta_phi(pt, eta, phi, mass=0.14)
    np.testing.assert_allclose(pt_eta_phi(p4), np.stack([pt, eta, phi], 1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(jet_kinematics(p4)[:, 3], 0.14, rtol=1e-5)
    np.testing.assert_allclose(invariant_mass(p4), 0.14, rtol=1e-5)
    # rapidity: atanh(pz / E); equal to eta for massless particles, smaller in size with mass
    np.testing.assert_allclose(rapidity(p4), np.arctanh(p4[:, 2] / p4[:, 3]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rapidity(p4_from_pt_eta_phi(pt, eta, phi)), eta, rtol=1e-9, atol=1e-12)
    assert (np.abs(rapidity(p4)) <= np.abs(eta) + 1e-12).all()
    assert rapidity(np.zeros(4)) == 0.0 and pt_eta_phi(np.zeros(4))[1] == 0.0
    assert jet_kinematics(p4[0]).shape == (1, 4)  # one jet four-vector


def test_mass_of_massless_pairs():
    # back-to-back at eta = 0: m = 2 E
    pair = p4_from_pt_eta_phi([500, 500], [0, 0], [0, np.pi])
    assert jet_kinematics(pair.sum(0))[0, 3] == pytest.approx(1000.0, rel=1e-9)
    assert m_jj(pair[0], pair[1]) == pytest.approx(1000.0, rel=1e-9)
    assert m_jj(pair[0], np.zeros(4)) == pytest.approx(0.0, abs=1e-5)  # a missing jet
    # any two massless particles: m^2 = 2 pT1 pT2 (cosh d_eta - cos d_phi); padding ignored, even
    # when it holds garbage, and the pair straddles the phi seam
    pt = np.array([[100.0, 50.0, 7.0]])
    eta = np.array([[0.1, -0.2, 1e3]])
    phi = np.array([[3.1, -3.0, 0.4]])
    mask = np.array([[True, True, False]])
    expect = np.sqrt(2 * 100 * 50 * (np.cosh(0.3) - np.cos(6.1 - 2 * np.pi)))
    assert jet_mass(pt, eta, phi, mask)[0] == pytest.approx(expect, rel=1e-9)
    assert np.isfinite(jet_p4(pt, eta, phi, mask)).all()


def test_jet_mass_invariant_under_boosts_and_rotations(tops):
    pt, eta, phi, mask = _tables(tops)
    m = jet_mass(pt, eta, phi, mask)
    assert 100 < np.median(m) < 250
    # longitudinal boost (massless: eta -> eta + c) and rotation about the beam (phi -> phi + a)
    np.testing.assert_allclose(jet_mass(pt, eta + 1.7, wrap_phi(phi + 2.5), mask), m, rtol=1e-9)
    # a general boost of the summed four-vector
    p4 = jet_p4(pt, eta, phi, mask)
    beta = np.array([0.3, -0.5, 0.6])
    b2 = beta @ beta
    gamma = 1 / np.sqrt(1 - b2)
    bp = p4[:, :3] @ beta
    e = gamma * (p4[:, 3] - bp)
    p = p4[:, :3] + ((gamma - 1) * bp / b2 - gamma * p4[:, 3])[:, None] * beta
    boosted = np.concatenate([p, e[:, None]], axis=1)
    assert not np.allclose(boosted[:, 3], p4[:, 3])
    np.testing.assert_allclose(invariant_mass(boosted), m, rtol=1e-7)


# --- N-subjettiness -------------------------------------------------------------------------

def test_hand_computed_three_particle_jet():
    """tau_1, tau_2 of three massless particles by hand; tau_3 = 0."""
    pt, eta, phi = np.array([[900.0, 0.30, 0.10], [400.0, 0.45, 0.20], [150.0, 0.10, -0.15]]).T
    p4 = p4_from_pt_eta_phi(pt, eta, phi)

    def axis(v):  # rapidity and phi of a four-vector
        return 0.5 * np.log((v[3] + v[2]) / (v[3] - v[2])), np.arctan2(v[1], v[0])

    # tau1: the axis is the jet (all three merged)
    y1, f1 = axis(p4.sum(0))
    tau1 = (pt * np.hypot(eta - y1, phi - f1)).sum() / (0.8 * pt.sum())
    # tau2: kT (R -> infinity) first merges the pair with the smallest min(pT^2) dR^2; the third
    # particle is an axis itself
    pairs = [(0, 1), (0, 2), (1, 2)]
    d = [min(pt[a], pt[b]) ** 2 * ((eta[a] - eta[b]) ** 2 + (phi[a] - phi[b]) ** 2) for a, b in pairs]
    a, b = pairs[int(np.argmin(d))]
    y2, f2 = axis(p4[a] + p4[b])
    tau2 = (pt[a] * np.hypot(eta[a] - y2, phi[a] - f2)
            + pt[b] * np.hypot(eta[b] - y2, phi[b] - f2)) / (0.8 * pt.sum())
    taus = nsubjettiness(pt[None], eta[None], phi[None], np.ones((1, 3), bool), r0=0.8)
    np.testing.assert_allclose(taus[0], [tau1, tau2, 0.0], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(nsubjettiness_of_p4([p4], r0=0.8)[0], [tau1, tau2, 0.0], rtol=1e-10,
                               atol=1e-15)
    # R0 only normalises
    np.testing.assert_allclose(nsubjettiness(pt[None], eta[None], phi[None], np.ones((1, 3), bool),
                                             r0=0.4), 2 * taus, rtol=1e-12)


def test_tau_zero_when_n_reaches_multiplicity():
    rng = np.random.default_rng(3)
    n_const = [0, 1, 2, 3, 4, 7]
    pt = np.zeros((len(n_const), 7))
    eta, phi = rng.normal(0, 0.3, pt.shape), rng.normal(0, 0.3, pt.shape)
    valid = np.arange(7)[None, :] < np.array(n_const)[:, None]
    pt[valid] = rng.uniform(5, 100, valid.sum())
    taus = nsubjettiness(pt, eta, phi, valid, r0=0.8, n_max=4)
    for k, n in enumerate(n_const):
        assert (taus[k, n - 1:] == 0).all() if n else (taus[k] == 0).all()
        assert (taus[k, :max(n - 1, 0)] > 0).all()
    lists = [p4_from_pt_eta_phi(pt[k, valid[k]], eta[k, valid[k]], phi[k, valid[k]])
             for k in range(len(n_const))]
    np.testing.assert_allclose(nsubjettiness_of_p4(lists, r0=0.8, n_max=4), taus, rtol=1e-12,
                               atol=1e-15)
    assert nsubjettiness_of_p4([], r0=0.8).shape == (0, 3)


def test_tau_decreases_with_n_and_ignores_padding(tops):
    pt, eta, phi, mask = _tables(tops)
    taus = nsubjettiness(pt, eta, phi, mask, r0=0.8)
    assert taus.shape == (200, 3) and (taus > 0).all()
    # exclusive-kT axes do not minimise tau_N, so the ordering holds for most jets, not all
    assert (taus[:, 0] > taus[:, 1]).mean() > 0.95 and (taus[:, 1] > taus[:, 2]).mean() > 0.9
    # zero-padding slots (with garbage angles) change nothing
    pad = [np.pad(a, ((0, 0), (0, 7)), constant_values=v) for a, v in ((pt, 0), (eta, 9), (phi, 9))]
    padded = nsubjettiness(*pad, np.pad(mask, ((0, 0), (0, 7))), r0=0.8)
    np.testing.assert_allclose(padded, taus)
    # three-prong tops have lower tau32 than QCD jets
    tq = nsubjettiness(*_tables(toy_jets(200, "qcd", seed=1)), r0=0.8)
    assert np.median(tau_ratios(taus)[1]) < np.median(tau_ratios(tq)[1])


def test_tau_invariant_under_longitudinal_boost_and_rotation_across_the_seam(tops):
    pt, eta, phi, mask = _tables(tops)
    taus = nsubjettiness(pt, eta, phi, mask, r0=0.8)
    # move every jet onto the phi = +-pi seam and shift it in eta
    phi_jet = tops["features"][:, 2].astype(np.float64)[:, None]
    moved = nsubjettiness(pt, eta - 1.1, wrap_phi(phi - phi_jet + np.pi), mask, r0=0.8)
    np.testing.assert_allclose(moved, taus, rtol=1e-8, atol=1e-12)


def test_padded_and_four_vector_entry_points_agree(tops):
    pt, eta, phi, mask = _tables(tops)
    lists = [p4_from_pt_eta_phi(pt[i, mask[i]], eta[i, mask[i]], phi[i, mask[i]]) for i in range(len(pt))]
    np.testing.assert_allclose(nsubjettiness_of_p4(lists, r0=0.8),
                               nsubjettiness(pt, eta, phi, mask, r0=0.8), rtol=1e-10, atol=1e-14)


def test_tau21_small_for_two_prongs_and_tau32_for_three():
    rng = np.random.default_rng(0)
    one = _prong(rng, 0.0, 0.0, 600, 30)
    two = np.concatenate([_prong(rng, 0, 0, 300, 15), _prong(rng, 0.5, 0.2, 300, 15)])
    three = np.concatenate([_prong(rng, 0, 0, 200, 10), _prong(rng, 0.4, 0.1, 200, 10),
                            _prong(rng, -0.2, 0.4, 200, 10)])
    taus = nsubjettiness_of_p4([one, two, three, one[:2]], r0=0.8)
    t21, t32 = tau_ratios(taus)
    assert taus.shape == (4, 3)
    assert t21[1] < 0.2 < t21[0]
    assert t32[2] < 0.2 < t32[1]
    assert (taus[3, 1:] == 0).all()  # two constituents: tau2 = tau3 = 0
    # tau1 of a two-prong jet: sum pT dR / (sum pT R0) with the axis near the pT centroid
    assert 0.25 < taus[1, 0] < 0.45


def test_tau_ratios_zero_denominators():
    t21, t32 = tau_ratios(np.array([[[0.4, 0.2, 0.1], [0.0, 0.0, 0.0]], [[0.3, 0.0, 0.0], [1, 1, 1]]]))
    np.testing.assert_allclose(t21, [[0.5, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(t32, [[0.5, 0.0], [0.0, 1.0]])


# --- energy flow polynomials ----------------------------------------------------------------

def test_efps_normalised_invariant_and_ignore_padding(tops):
    pt, eta, phi, mask = (a[:20] for a in _tables(tops))
    x = efps(pt, eta, phi, mask, dmax=3)
    assert x.shape == (20, 13)  # all EFPs with d <= 3
    np.testing.assert_allclose(x[:, 0], 1.0)  # the d = 0 EFP of normalised energies
    assert (x[:, 1:] > 0).all()
    # pT scale, longitudinal boost, rotation across the seam, garbage in padding: no change
    phi_jet = tops["features"][:20, 2].astype(np.float64)[:, None]
    moved = efps(np.pad(3 * pt, ((0, 0), (0, 2))), np.pad(eta + 0.7, ((0, 0), (0, 2)), constant_values=9),
                 np.pad(wrap_phi(phi - phi_jet + np.pi), ((0, 0), (0, 2)), constant_values=9),
                 np.pad(mask, ((0, 0), (0, 2))), dmax=3)
    np.testing.assert_allclose(moved, x, rtol=1e-9)
