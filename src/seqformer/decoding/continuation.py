"""Greedy and beam search for decoder-only language models (GPT): continuing a prompt.

:mod:`seqformer.decoding.search` drives models that start from an encoded source and are fed
``bos`` first. A language model instead reads its prompt, and its first output distribution is
the one after the prompt's last token. :class:`Continuation` adapts one to the other: ``start``
runs the prompt and keeps that distribution pending, the first ``step`` returns it (ignoring the
``bos`` the search feeds), and later steps advance the model's KV cache. Beam search, n-best,
length penalties and every logits processor then work on GPT unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class ContinuationState:
    inner: object  # the language model's own state (KV caches)
    pending: Tensor | None  # the distribution after the prompt, until the first step uses it

    def select(self, indices: Tensor) -> ContinuationState:
        return ContinuationState(self.inner.select(indices),
                                 None if self.pending is None
                                 else self.pending.index_select(0, indices))


class Continuation(nn.Module):
    """A language model with the ``start(prompt)`` / ``step`` surface of an encoder-decoder.

    Prompts in a batch must have the same length (no padding: the model has no padding mask).
    ``max_length`` for a search counts new tokens, eos included; prompt plus output must fit
    the model's context.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        c = lm.config
        self.config = c
        self.pad_id, self.bos_id, self.eos_id = lm.pad_id, lm.bos_id, lm.eos_id

    def start(self, prompt: Tensor) -> ContinuationState:
        state = self.lm.start(prompt)
        return ContinuationState(state, state.log_probs)

    def step(self, tokens: Tensor, state: ContinuationState
             ) -> tuple[Tensor, ContinuationState]:
        if state.pending is not None:
            return state.pending, ContinuationState(state.inner, None)
        log_probs, inner = self.lm.step(tokens, state.inner)
        return log_probs, ContinuationState(inner, None)
