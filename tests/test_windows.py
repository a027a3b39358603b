"""Window arithmetic shared by `avtag run` and batch evaluation (avtag.inference.windows)."""

import numpy as np
import pytest

from avtag.inference.windows import active_ranges, plan_windows, valid_frames


@pytest.mark.parametrize("duration", [3.0, 9.99, 10.0, 10.04, 10.5])
def test_a_clip_up_to_half_a_second_longer_than_the_window_is_one_window(duration):
    plan = plan_windows(duration, 10.0)
    assert plan.starts == (0.0,)
    assert plan.cropped_seconds == pytest.approx(max(0.0, duration - 10.0))


@pytest.mark.parametrize("duration", [10.6, 12.0, 15.0, 17.0, 19.9, 20.0, 27.0, 61.0, 3600.0])
def test_windows_cover_the_file_and_never_start_less_than_a_hop_apart(duration):
    plan = plan_windows(duration, 10.0)
    starts = np.array(plan.starts)
    assert starts[0] == 0.0
    assert np.all(np.diff(starts) >= plan.hop - 1e-6)
    assert np.all(np.diff(starts) <= plan.window + 1e-6)  # no gap between windows
    assert starts[-1] + plan.window >= duration - 1e-6  # the tail is covered
    assert plan.cropped_seconds == 0.0
    # only a file shorter than window + hop keeps padding, and never more than half a window
    assert plan.padded_seconds <= plan.hop + 1e-6
    if duration >= plan.window + plan.hop:
        assert plan.padded_seconds == 0.0
    # every second of audio is analysed at most twice
    grid = np.arange(0.0, duration, 0.05)
    covered = ((grid[:, None] >= starts[None]) & (grid[:, None] < starts[None] + plan.window)).sum(axis=1)
    assert covered.min() >= 1 and covered.max() <= 2


def test_short_file_reports_its_real_part():
    plan = plan_windows(5.0, 10.0)
    assert plan.valid_seconds == (5.0,)
    assert plan.padded_seconds == 5.0
    assert valid_frames(5.0, 0.1, 100) == 50


def test_active_ranges_bridge_short_gaps():
    active = np.zeros(50, bool)
    active[10:20] = True
    active[22:30] = True  # 0.2 s gap: bridged
    active[40:45] = True  # 1.0 s gap: a new range
    assert active_ranges(active, 0.1) == [(1.0, 3.0), (4.0, 4.5)]
