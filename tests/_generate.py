"""What the generation tests share (tests/test_generate*.py): a plan from a few
GenerationConfig fields and a robust peak finder for mass distributions."""

import numpy as np

from clrdist.data.generation import GenerationConfig, make_plan


def plan_of(procs, n, **fields):
    """The generation plan of ``procs``, ``n`` jets each, the other GenerationConfig fields given."""
    return make_plan(GenerationConfig(processes=procs, n_jets=n, **fields))


def robust_peak(x: np.ndarray, frac: float = 0.5) -> float:
    """Centre of the shortest interval holding ``frac`` of the values (a robust mode)."""
    x = np.sort(x)
    k = max(1, int(frac * len(x)))
    widths = x[k:] - x[: len(x) - k]
    i = int(np.argmin(widths))
    return float(0.5 * (x[i] + x[i + k]))
