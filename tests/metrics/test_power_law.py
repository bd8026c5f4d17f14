"""Power-law fits recover known laws; the frontier keeps only unbeaten points."""

from __future__ import annotations

import math
import random

import pytest

from seqformer.metrics.power_law import (
    fit_power_law,
    fit_power_law_with_floor,
    pareto_frontier,
)

SIZES = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5]


def test_plain_law_is_recovered_exactly() -> None:
    loss = [(8.8e13 / n) ** 0.076 for n in SIZES]  # Kaplan's L(N)
    law = fit_power_law(SIZES, loss)
    assert law.alpha == pytest.approx(0.076, rel=1e-9)
    assert law.scale == pytest.approx(8.8e13, rel=1e-6)
    assert law.floor == 0.0 and law.r2 == pytest.approx(1.0)
    assert law(5e4) == pytest.approx((8.8e13 / 5e4) ** 0.076, rel=1e-9)


def test_floor_is_found_where_a_plain_law_bends() -> None:
    loss = [1.69 + (4e3 / n) ** 0.34 for n in SIZES]  # Chinchilla-shaped, with E = 1.69
    law = fit_power_law_with_floor(SIZES, loss)
    assert law.floor == pytest.approx(1.69, rel=1e-4)
    assert law.alpha == pytest.approx(0.34, rel=1e-3)
    assert law.scale == pytest.approx(4e3, rel=1e-2)
    plain = fit_power_law(SIZES, loss)
    assert plain.r2 < 0.999 < law.r2  # the plain law cannot follow the bend


def test_floor_fit_is_not_fooled_by_noise_into_a_large_floor() -> None:
    rng = random.Random(0)
    loss = [(1e4 / n) ** 0.3 * math.exp(rng.gauss(0, 0.01)) for n in SIZES]
    law = fit_power_law_with_floor(SIZES, loss)
    assert law.floor < 0.2 * min(loss)
    assert law.alpha == pytest.approx(0.3, abs=0.05)


def test_growing_loss_gives_a_negative_exponent() -> None:
    assert fit_power_law([1, 10, 100], [1.0, 1.1, 1.2]).alpha < 0


@pytest.mark.parametrize("x, y, words", [
    ([1.0], [1.0], "at least 2"),
    ([1.0, 2.0], [1.0], "losses"),
    ([1.0, -2.0], [1.0, 0.5], "positive"),
    ([2.0, 2.0], [1.0, 0.5], "all equal"),
])
def test_bad_points_are_refused(x, y, words) -> None:
    with pytest.raises(ValueError, match=words):
        fit_power_law(x, y)


def test_floor_needs_four_points() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        fit_power_law_with_floor([1.0, 2.0, 3.0], [3.0, 2.0, 1.5])


def test_frontier_keeps_points_no_cheaper_point_beats() -> None:
    points = [(4.0, 2.0), (1.0, 3.0), (2.0, 3.5), (3.0, 2.5), (4.0, 1.9), (5.0, 2.1), (1.0, 3.2)]
    assert pareto_frontier(points) == [(1.0, 3.0), (3.0, 2.5), (4.0, 1.9)]
    assert pareto_frontier([]) == []
