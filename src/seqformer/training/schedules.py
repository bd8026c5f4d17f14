"""Learning-rate schedules as multipliers of the optimizer's configured lr.

Every schedule is a ``LambdaLR`` whose factor peaks at exactly 1.0 at the end of warmup, so the
``lr`` in a recipe always means "the highest learning rate this run will use" whatever the
schedule -- comparing recipes never requires redoing Vaswani's ``d_model ** -0.5`` arithmetic.

Step convention: the trainer calls ``scheduler.step()`` after each ``optimizer.step()``, so the
factor for the ``n``-th update (1-based) is ``lambda(n - 1)``. We evaluate the formulas at ``n``
so the first update does not waste itself on an lr of 0 and update ``warmup_steps`` is the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from seqformer.errors import ConfigError

SCHEDULES = ("noam", "inverse_sqrt", "cosine", "linear", "constant")


def _warmup(n: int, warmup_steps: int) -> float:
    return n / warmup_steps if n < warmup_steps else 1.0


def _decay_progress(n: int, warmup_steps: int, total_steps: int) -> float:
    """Fraction of the decay phase done at update ``n``, clamped to [0, 1].

    The phase starts at update ``max(warmup_steps, 1)``: without warmup the first update still
    uses the full lr, and update ``total_steps`` always gets the final value.
    """
    start = max(warmup_steps, 1)
    return min(1.0, max(0.0, (n - start) / max(1, total_steps - start)))


def _factor_fn(
    name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float,
    progress: Callable[[], float] | None = None,
) -> Callable[[int], float]:
    # Closures rather than callable objects on purpose: LambdaLR.state_dict() then stores only
    # counters, so a resumed run picks up the schedule of its *current* config (e.g. a larger
    # max_steps) and the state stays JSON-serialisable.
    def decayed(n: int) -> float:
        if progress is not None:
            return min(1.0, max(0.0, progress()))
        return _decay_progress(n, warmup_steps, total_steps)

    if name in ("noam", "inverse_sqrt"):

        def factor(step: int) -> float:
            n = step + 1
            return n / warmup_steps if n < warmup_steps else math.sqrt(warmup_steps / n)

    elif name == "cosine":

        def factor(step: int) -> float:
            n = step + 1
            if n < warmup_steps:
                return _warmup(n, warmup_steps)
            cos = 0.5 * (1.0 + math.cos(math.pi * decayed(n)))
            return min_lr_ratio + (1.0 - min_lr_ratio) * cos

    elif name == "linear":

        def factor(step: int) -> float:
            n = step + 1
            if n < warmup_steps:
                return _warmup(n, warmup_steps)
            return 1.0 - decayed(n)

    else:  # constant

        def factor(step: int) -> float:
            return _warmup(step + 1, warmup_steps)

    return factor


def make_scheduler(
    optimizer: Optimizer,
    name: str,
    warmup_steps: int,
    total_steps: int,
    d_model: int | None = None,
    min_lr_ratio: float = 0.0,
    progress: Callable[[], float] | None = None,
) -> LambdaLR:
    """Build the named schedule: linear warmup to the configured lr, then the named decay.

    - ``noam`` / ``inverse_sqrt``: Vaswani et al.'s ``d_model**-0.5 * min(n**-0.5,
      n * warmup**-1.5)`` divided by its peak value, i.e. ``lr * min(n/warmup, sqrt(warmup/n))``.
      ``d_model`` only scales the un-normalised formula, so it cancels out; it is accepted (and
      checked) so recipes written for the paper's schedule need no edits. Needs warmup >= 1.
    - ``cosine``: cosine from lr down to ``min_lr_ratio * lr`` at ``total_steps``, flat after.
    - ``linear``: straight line from lr to 0 at ``total_steps``.
    - ``constant``: flat at lr after warmup.

    ``progress`` (cosine and linear only) replaces the step count as the measure of how far the
    decay has gone: a function returning the fraction done in [0, 1], e.g. of a time budget,
    so a run stopped by the clock still ends at the bottom of its schedule on any hardware.
    Warmup stays counted in steps.
    """
    if name not in SCHEDULES:
        raise ConfigError(
            f"train.schedule is {name!r}, which is not a schedule; "
            f"use one of: {', '.join(SCHEDULES)}"
        )
    if warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if name in ("noam", "inverse_sqrt") and warmup_steps < 1:
        raise ConfigError(
            f"schedule {name!r} needs train.warmup_steps >= 1 (it decays as "
            f"sqrt(warmup/step)); set warmup_steps, or use schedule 'constant' for no warmup"
        )
    if progress is not None and name not in ("cosine", "linear"):
        raise ConfigError(f"schedule {name!r} does not decay to an end, so it cannot follow "
                          "the time budget; use schedule cosine or linear with train.anneal: time")
    if d_model is not None and d_model < 1:
        raise ConfigError(f"model.d_model must be >= 1, got {d_model}")
    return LambdaLR(optimizer, _factor_fn(name, warmup_steps, total_steps, min_lr_ratio,
                                          progress))
