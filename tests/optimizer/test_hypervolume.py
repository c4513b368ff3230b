import math

import pytest

from petra.optimizer.hypervolume import drop_latency_hypervolume, hypervolume_2d, normalized_hypervolume


def test_single_point_is_its_rectangle():
    assert hypervolume_2d([(0.25, 0.5)], (1.0, 1.0)) == pytest.approx(0.75 * 0.5)


def test_staircase_of_two_points():
    # (0, 0.5) covers 1.0 x 0.5; (0.5, 0.2) adds 0.5 x 0.3
    assert hypervolume_2d([(0.5, 0.2), (0.0, 0.5)], (1.0, 1.0)) == pytest.approx(0.5 + 0.15)


def test_dominated_duplicate_and_outside_points_add_nothing():
    front = [(0.0, 0.5), (0.5, 0.2)]
    noisy = front + [(0.6, 0.6), (0.5, 0.2), (1.0, 0.1), (0.2, 1.0), (2.0, 2.0), (math.nan, 0.1)]
    assert hypervolume_2d(noisy, (1.0, 1.0)) == pytest.approx(hypervolume_2d(front, (1.0, 1.0)))


def test_empty_and_baseline_are_zero():
    assert hypervolume_2d([], (1.0, 1.0)) == 0.0
    assert drop_latency_hypervolume([(0.0, 1.0)], max_drop=1.0) == 0.0  # the FP32 baseline itself


def test_three_point_front_known_value():
    pts = [(0.1, 0.8), (0.3, 0.4), (0.7, 0.1)]
    # strips: (1-0.1)*(1-0.8) + (1-0.3)*(0.8-0.4) + (1-0.7)*(0.4-0.1)
    assert hypervolume_2d(pts, (1.0, 1.0)) == pytest.approx(0.18 + 0.28 + 0.09)


def test_gains_are_clipped_to_zero_drop_and_normalized_in_unit_interval():
    assert drop_latency_hypervolume([(-3.0, 0.5)], max_drop=2.0) == pytest.approx(2.0 * 0.5)
    assert normalized_hypervolume([(-3.0, 0.5)], max_drop=2.0) == pytest.approx(0.5)
    assert normalized_hypervolume([(0.0, 0.0)], max_drop=1.0) == pytest.approx(1.0)


def test_more_points_never_shrink_the_hypervolume():
    a = [(0.2, 0.3)]
    assert normalized_hypervolume(a + [(0.8, 0.05)], 1.0) > normalized_hypervolume(a, 1.0)


def test_bad_max_drop():
    with pytest.raises(ValueError, match="max_drop"):
        drop_latency_hypervolume([(0.0, 0.5)], max_drop=0)
