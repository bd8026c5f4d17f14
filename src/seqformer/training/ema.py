"""An exponential moving average (EMA) of the weights, kept beside the trained ones.

Averaging the weights along the trajectory smooths out the noise of the last updates, which
usually gives a slightly better model for free (Polyak averaging; used by fairseq's
``--ema-decay``, timm and most diffusion trainers). Unlike checkpoint averaging it needs no
saved checkpoints and follows every step.

After each optimizer step, for every parameter::

    ema = decay_t * ema + (1 - decay_t) * param,   decay_t = min(decay, (1 + t) / (10 + t))

where ``t`` is the number of updates so far. The warmup on ``decay_t`` (TensorFlow's
``ExponentialMovingAverage(num_updates=...)``) keeps the average from being dominated by the
random initial weights in short runs. Buffers (fixed positional tables, running statistics)
are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay actually used at update number ``updates`` (0-based), warmup included."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """A frozen copy of ``model`` whose weights trail the trained ones.

    ``module`` is an ordinary model of the same class: validate it, save it, decode with it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - ema_decay(self.decay, self.updates)
        ours = [p for p in self.module.parameters()]
        theirs = [p.detach() for p in model.parameters()]
        float_pairs = [(a, b) for a, b in zip(ours, theirs) if a.is_floating_point()]
        if float_pairs:
            torch._foreach_lerp_([a for a, _ in float_pairs], [b for _, b in float_pairs],
                                 weight)
        for a, b in zip(self.module.buffers(), model.buffers()):
            a.copy_(b)
        self.updates += 1
