"""Power laws for scaling studies: ``L(x) = E + (x_c / x) ** alpha``.

Kaplan et al. (2020) found a language model's loss falls as a power of its non-embedding
parameters N, of the training compute C and of the data D, with the other two not limiting:
``L(N) = (N_c / N) ** alpha_N`` and so on. Hoffmann et al. (2022, "Chinchilla") added an
irreducible term E (the entropy of the text itself, which no model removes), so a plain
power law fitted to losses near that floor bends. Both forms are fitted here: the plain one
is a straight line in log-log space (least squares, exact and fast); the one with a floor
searches E and fits the straight line to ``log(L - E)`` for each candidate, keeping the E
whose curve is closest to the losses in log space (so a 1% miss weighs the same at every
size, as on a log-log plot).

Also here: the compute frontier, the runs' (compute, loss) points that no cheaper point
beats -- what "the best loss reachable with compute C" means when read off training curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FLOOR_GRID = 200  # candidate floors tried before the golden-section refinement


@dataclass(frozen=True)
class PowerLaw:
    """``loss(x) = floor + (scale / x) ** alpha``; ``r2`` is measured on log(loss)."""

    scale: float
    alpha: float
    floor: float
    r2: float
    points: int

    def __call__(self, x: float) -> float:
        return self.floor + (self.scale / x) ** self.alpha

    def as_product(self) -> tuple[float, float]:
        """``(k, a)`` with ``y = k * x ** a`` (floor aside): the form for quantities that grow
        with x, such as the compute-optimal model size."""
        return self.scale**self.alpha, -self.alpha

    def describe(self, name: str) -> str:
        """One line, in the paper's notation: ``L(N) = (1.2e5 / N)^0.076`` (+ floor)."""
        law = f"({self.scale:.3g} / {name})^{self.alpha:.3f}"
        if self.floor:
            law = f"{self.floor:.3f} + {law}"
        return f"L({name}) = {law}  (R^2 {self.r2:.3f} in log space, {self.points} points)"


def _check(x: Sequence[float], y: Sequence[float], least: int) -> None:
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values but {len(y)} losses")
    if len(x) < least:
        raise ValueError(f"a power law needs at least {least} points, got {len(x)}")
    if any(not (v > 0 and math.isfinite(v)) for v in (*x, *y)):
        raise ValueError("power laws need positive, finite x values and losses")
    if len(set(x)) < 2:
        raise ValueError("the x values are all equal: nothing to fit a slope to")


def _line(u: Sequence[float], v: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``v = a + b u`` -> (a, b)."""
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    suu = sum((a - mu) ** 2 for a in u)
    b = sum((a - mu) * (c - mv) for a, c in zip(u, v)) / suu
    return mv - b * mu, b


def _r2(observed: Sequence[float], predicted: Sequence[float]) -> float:
    mean = sum(observed) / len(observed)
    total = sum((o - mean) ** 2 for o in observed)
    residual = sum((o - p) ** 2 for o, p in zip(observed, predicted))
    return 1.0 - residual / total if total > 0 else 1.0


def _fit_above(x: Sequence[float], y: Sequence[float], floor: float) -> PowerLaw:
    """The straight line through ``(log x, log(y - floor))``, scored on ``log y``."""
    u = [math.log(v) for v in x]
    a, b = _line(u, [math.log(v - floor) for v in y])
    alpha = -b
    # log(y - E) = a - alpha log x  =>  y - E = (exp(a / alpha) / x) ** alpha
    scale = math.exp(a / alpha) if alpha != 0 else math.inf
    predicted = [math.log(floor + math.exp(a + b * v)) for v in u]
    return PowerLaw(scale, alpha, floor, _r2([math.log(v) for v in y], predicted), len(x))


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Kaplan's form ``L = (x_c / x) ** alpha`` by least squares in log-log space.

    A negative ``alpha`` means the loss grew with x (more was worse): returned as measured,
    not hidden, so a report can say so.
    """
    _check(x, y, 2)
    return _fit_above(x, y, 0.0)


def fit_power_law_with_floor(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """``L = E + (x_c / x) ** alpha`` with ``0 <= E < min(L)``; needs 4 points (3 unknowns
    and at least one to check them against).

    E is searched on a grid, then refined by golden section around the best grid point; the
    error compared is that of ``log L`` (every candidate's curve against the same numbers).
    """
    _check(x, y, 4)
    logs = [math.log(v) for v in y]
    top = min(y)

    def error(floor: float) -> float:
        law = _fit_above(x, y, floor)
        return sum((math.log(law(v)) - o) ** 2 for v, o in zip(x, logs))

    grid = [top * i / FLOOR_GRID for i in range(FLOOR_GRID)]  # 0 .. just below min(L)
    errors = [error(f) for f in grid]
    best = min(range(len(grid)), key=errors.__getitem__)
    lo = grid[max(best - 1, 0)]
    hi = grid[best + 1] if best + 1 < len(grid) else top * (1 - 1e-9)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if error(a) <= error(b):
            hi = b
        else:
            lo = a
    floor = (lo + hi) / 2
    if error(floor) > errors[best]:
        floor = grid[best]
    return _fit_above(x, y, floor)


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, loss) points no cheaper-or-equal point matches: sorted by cost, each with a
    lower loss than every point before it."""
    frontier: list[tuple[float, float]] = []
    for cost, loss in sorted(points):
        if not frontier or loss < frontier[-1][1]:  # sorted: a tie in cost comes lowest first
            frontier.append((cost, loss))
    return frontier
