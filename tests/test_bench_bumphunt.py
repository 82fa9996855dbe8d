"""bench.bumphunt's own arithmetic: where a scan first reaches 3 sigma, the substructure inputs."""

import numpy as np
import pytest

from bench.bumphunt import at_3sigma, substructure


def test_fraction_at_3_sigma_is_interpolated_in_log_f():
    rows = [{"fraction": 0.0, "z": 5.0}, {"fraction": 0.001, "z": 1.0},
            {"fraction": 0.01, "z": 5.0}, {"fraction": 0.003, "z": None}]
    # ln f halfway between 0.001 and 0.01 (z from 1 to 5: 3 is halfway); f = 0 never counts
    assert at_3sigma(rows, "z") == pytest.approx(np.sqrt(0.001 * 0.01))
    assert at_3sigma([{"fraction": 0.001, "z": 3.5}], "z") == 0.001
    assert at_3sigma([{"fraction": 0.01, "z": 2.0}], "z") is None


def test_substructure_orders_jets_by_mass():
    names = ["m_jj", "m_J1", "m_J2", "tau21_J1", "tau32_J1", "tau21_J2"]
    f = np.array([[3500, 100, 500, 0.2, 0.5, 0.6], [3000, 300, 50, 0.7, 0.4, 0.3]], float)
    np.testing.assert_array_equal(substructure(f, names),
                                  [[500, 100, 0.6, 0.2], [300, 50, 0.7, 0.3]])


def test_flatness_verdict_flags_a_group_whose_p_values_sit_below_its_null():
    from bench.bumphunt import flatness_verdict

    rng = np.random.default_rng(0)
    null = [{"group": "null", "eps_0.1": list(rng.uniform(size=16)),
             "eps_0.01": list(rng.uniform(size=16)), "combined": list(rng.uniform(size=16))}]
    flat = [{"group": "trained", "eps_0.1": list(rng.uniform(size=16)),
             "eps_0.01": list(rng.uniform(size=16)), "combined": list(rng.uniform(size=16))}]
    sculpting = [{"group": "trained", "eps_0.1": list(rng.uniform(size=16)),
                  "eps_0.01": list(rng.uniform(0, 0.01, size=16)),
                  "combined": list(rng.uniform(0, 0.02, size=16))}]
    ok = {r["name"]: r for r in flatness_verdict(flat + null, "trained")}
    bad = {r["name"]: r for r in flatness_verdict(sculpting + null, "trained")}
    assert set(ok) == {"eps 0.1", "eps 0.01", "combined"}
    assert all(r["mannwhitney_p_smaller"] > 0.05 for r in ok.values())
    assert bad["eps 0.01"]["mannwhitney_p_smaller"] < 1e-4
    assert bad["eps 0.01"]["share_below_0.01"] == 1.0 and bad["eps 0.01"]["n_hunts"] == 16
    assert bad["eps 0.1"]["mannwhitney_p_smaller"] > 0.05
