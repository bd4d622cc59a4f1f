from __future__ import annotations

import pytest

from prunetune.components.spaces import check_kernel_sizes
from prunetune.search_spaces._common import (
    check_choices,
    check_ratio_options,
    nearest_kernel,
    ratio_grid_top,
    snap_ratio,
)


def test_grid_top_is_the_last_step_not_above_max_ratio():
    assert ratio_grid_top(0.8, 0.05) == 0.8
    assert ratio_grid_top(0.83, 0.05) == 0.8
    assert ratio_grid_top(0.83, None) == 0.83


@pytest.mark.parametrize(
    ("ratio", "step", "expected"),
    [
        (0.5, 0.05, 0.5),
        (0.33, 0.05, 0.3),
        (0.349, 0.05, 0.3),
        (0.35, 0.05, 0.35),
        (0.95, 0.05, 0.8),
        (-0.1, 0.05, 0.0),
        (0.33, None, 0.33),
    ],
)
def test_snap_ratio_rounds_down_onto_the_grid_and_clips(ratio, step, expected):
    assert snap_ratio(ratio, 0.8, step) == expected


def test_nearest_kernel_prefers_the_smaller_on_a_tie():
    assert nearest_kernel(3, (3, 5, 7)) == 3
    assert nearest_kernel(3, (5, 7)) == 5
    assert nearest_kernel(5, (3, 7)) == 3
    assert nearest_kernel(11, (3, 5, 7)) == 7


@pytest.mark.parametrize(("max_ratio", "step"), [(0.0, None), (1.0, 0.05), (0.8, 0.0), (0.5, 0.6)])
def test_bad_ratio_options_are_refused(max_ratio, step):
    with pytest.raises(ValueError):
        check_ratio_options(max_ratio, step)


@pytest.mark.parametrize("sizes", [(), (3, 4), (0,), (3, 3), (True,)])
def test_bad_kernel_sizes_are_refused(sizes):
    with pytest.raises(ValueError):
        check_kernel_sizes(sizes)


@pytest.mark.parametrize(("scorers", "distillers"), [(("l1", "l1"), ()), ((), ("",))])
def test_bad_choices_are_refused(scorers, distillers):
    with pytest.raises(ValueError):
        check_choices(scorers, distillers)
