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


def _runs(name, observed, null):
    """flatness_run outputs: perm 0 observed, then one per permutation (same p for every cut)."""
    return [{"name": name, "perm": i, **{c: list(v) for c in ("eps_0.1", "eps_0.01", "combined")}}
            for i, v in enumerate([observed, *null])]


def test_the_permutation_verdict_is_exact_and_flags_only_the_less_flat_selection():
    from bench.bumphunt_flatness import permutation_verdict

    rng = np.random.default_rng(0)
    null = [rng.uniform(0.1, 1, size=3) for _ in range(19)]
    sculpting = _runs("sculpting", [0.001, 0.02, 0.004], null)  # below every permutation
    typical = _runs("typical", [0.2, 0.9, np.median([np.median(v) for v in null])], null)
    rows = {r["name"]: r for r in permutation_verdict(sculpting + typical)}
    bad, ok = rows["sculpting"], rows["typical"]
    assert bad["n_permutations"] == 19 and bad["hunt_seeds"] == 3
    assert bad["combined_median"] == 0.004 and bad["combined_perm_p"] == 0.05
    assert bad["min_perm_p"] == 0.05 and not bad["flat"]
    # the median of the permutations' medians ranks 10th of 19: p = (1 + 10) / 20
    assert ok["combined_perm_p"] == 0.55 and ok["flat"]
    assert ok["combined_null_median"] == round(float(np.median([np.median(v) for v in null])), 4)
    with pytest.raises(ValueError, match="at least one permutation"):
        permutation_verdict(_runs("alone", [0.5, 0.5, 0.5], []))
