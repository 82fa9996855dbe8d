"""bench.adc_nplm's bookkeeping: where the median Z crosses 3."""

import numpy as np
import pytest

from bench.adc_nplm import crossing


def test_crossing_interpolates_in_log_signal_count():
    grid = np.array([10, 100, 1000])
    assert crossing(grid, np.array([1.0, 5.0, 9.0])) == pytest.approx(10 ** 1.5)
    assert crossing(grid, np.array([3.5, 5.0, 9.0])) == 10.0  # already above at the first point
    assert crossing(grid, np.array([0.5, 1.0, 2.9])) is None  # beyond the grid
    # the first crossing counts, not a later dip
    assert crossing(grid, np.array([1.0, 3.0, 2.0])) == pytest.approx(100.0)
