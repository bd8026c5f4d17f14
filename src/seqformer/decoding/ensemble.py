"""Ensemble decoding: several models that share vocabularies, searched as one.

An :class:`Ensemble` has the same ``start`` / ``step`` / ``state.select`` surface as a single
model, so greedy, beam search and every logits processor work on it unchanged
(:mod:`seqformer.decoding.search` never learns it is decoding more than one model).

At each step the members' next-token distributions are combined:

- ``logprob`` (default; OpenNMT-py's rule): the mean of the members' log-probabilities,
  renormalised with a log-softmax, i.e. a normalised geometric mean (product of experts).
  A token any member finds very unlikely is pushed down hard.
- ``prob`` (fairseq's rule): the log of the mean of the members' probabilities
  (``logsumexp - log n``), a mixture; a token one member likes survives.

Both are proper distributions, so a hypothesis' ``log_prob`` stays a log-probability, and an
ensemble of one model with itself scores exactly like the model.

Members may also be decoders that wrap a model (:class:`~seqformer.decoding.static.
StaticDecoding`, whose step is one CUDA graph): the wrapped modules are what the ensemble
holds as submodules (device, ``eval()``), the wrappers are what it decodes with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqformer.decoding.search import start as start_member

COMBINE_RULES = ("logprob", "prob")


@dataclass
class EnsembleState:
    """One decoder state per member, reordered together for beam search."""

    states: list

    def select(self, indices: Tensor) -> EnsembleState:
        return EnsembleState([s.select(indices) for s in self.states])

    def select_beams(self, indices: Tensor) -> EnsembleState:
        return EnsembleState([getattr(s, "select_beams", s.select)(indices)
                              for s in self.states])


class Ensemble(nn.Module):
    """Members decode in lockstep; their per-step distributions are combined by ``combine``."""

    def __init__(self, models: Sequence[nn.Module], combine: str = "logprob") -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine={combine!r}; use one of {', '.join(COMBINE_RULES)}")
        first = models[0]
        for i, m in enumerate(models[1:], 2):
            for name in ("pad_id", "bos_id", "eos_id"):
                if getattr(m, name) != getattr(first, name):
                    raise ValueError(f"model {i} has {name} {getattr(m, name)}, model 1 has "
                                     f"{getattr(first, name)}")
        self.members = nn.ModuleList([m if isinstance(m, nn.Module) else m.model for m in models])
        self.decoders = list(models)  # what start/step run: the members or their wrappers
        # Fixed-size caches must know how long outputs may grow (see search.start).
        self.sized_start = any(getattr(m, "sized_start", False) for m in models)
        self.combine = combine
        self.pad_id, self.bos_id, self.eos_id = first.pad_id, first.bos_id, first.eos_id
        # Decoding reads config.max_len (how long an output may be): the shortest member wins,
        # since every member must be able to embed every position.
        max_len = min(m.config.max_len for m in models)
        self.config = dataclasses.replace(first.config, max_len=max_len) \
            if dataclasses.is_dataclass(first.config) else first.config

    def start(self, src: Tensor, max_length: int | None = None) -> EnsembleState:
        return EnsembleState([start_member(m, src, max_length) for m in self.decoders])

    def step(self, tokens: Tensor, state: EnsembleState) -> tuple[Tensor, EnsembleState]:
        outs = [m.step(tokens, s) for m, s in zip(self.decoders, state.states)]
        stacked = torch.stack([lp for lp, _ in outs])  # (members, batch, vocab)
        if len(outs) == 1:
            combined = stacked[0]
        elif self.combine == "logprob":
            combined = stacked.mean(0).log_softmax(dim=-1)
        else:
            combined = torch.logsumexp(stacked, dim=0) - math.log(len(outs))
        return combined, EnsembleState([s for _, s in outs])
