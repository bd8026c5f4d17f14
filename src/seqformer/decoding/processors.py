"""Small composable logits processors for greedy and beam search (issue 9, "Decoding").

A processor is a callable ``(log_probs (N, V), history (N, t), step) -> log_probs``: ``history``
holds the tokens each hypothesis has produced so far (no bos), ``step == t``. Processors run in
the search after :func:`~seqformer.decoding.search.restrict` and compose in any order.

Two kinds, and why it matters for the scores a search reports:

- *Masking* processors (:class:`MinLength`, :class:`NoRepeatNGram`, :class:`BadWords`,
  :class:`ForcedPrefix`, :class:`ForcedPrefixes`, :class:`SuppressTokens`,
  :class:`SuppressAtStep`) only set scores to -inf. A token they leave is untouched, so a chosen
  token's score is still its true log-prob and nothing needs renormalising.
- *Rescaling* processors (:class:`RepetitionPenalty`) change the scores of allowed tokens. The
  searches rank by these processed scores (``Hypothesis.score``) but accumulate the model's own
  log-probs of the chosen tokens in ``Hypothesis.log_prob``, so ``log_prob`` always stays the
  true sequence log-probability.

Processors never modify their input in place. They return new tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Processor = Callable[[Tensor, Tensor, int], Tensor]  # (log_probs, history, step) -> log_probs

NEG_INF = float("-inf")


class MinLength:
    """eos is impossible before ``n`` output tokens (eos itself not counted) have been made."""

    def __init__(self, n: int, eos_id: int) -> None:
        if n < 0:
            raise ValueError(f"min_length must be >= 0, got {n}")
        self.n, self.eos_id = n, eos_id

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if step >= self.n:
            return log_probs
        out = log_probs.clone()
        out[:, self.eos_id] = NEG_INF
        return out


class NoRepeatNGram:
    """No n-gram occurs twice in a hypothesis (fairseq's and Hugging Face's rule): a token is
    banned when the last ``n - 1`` tokens followed by it already occur in the history."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"no_repeat_ngram must be >= 1, got {n}")
        self.n = n

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        n, t = self.n, history.shape[1]
        if t < n:  # no complete n-gram yet, so nothing can repeat one
            return log_probs
        windows = history.unfold(1, n, 1)  # (N, t - n + 1, n): every n-gram so far
        prefix = history[:, t - n + 1:].unsqueeze(1)  # (N, 1, n - 1): what the next one extends
        match = (windows[:, :, :-1] == prefix).all(dim=-1)  # (N, W)
        vocab = log_probs.shape[-1]
        # Non-matching windows write into a spare column, so every write is True (deterministic).
        targets = torch.where(match, windows[:, :, -1], torch.full_like(match, vocab,
                                                                        dtype=torch.long))
        banned = torch.zeros(log_probs.shape[0], vocab + 1, dtype=torch.bool,
                             device=log_probs.device)
        banned.scatter_(1, targets, True)
        return log_probs.masked_fill(banned[:, :vocab], NEG_INF)


class RepetitionPenalty:
    """CTRL's penalty (Keskar et al., 2019) on tokens already in the hypothesis.

    CTRL divides positive logits by ``p`` and multiplies negative ones. Here the search gives
    log-probs, which are never positive, so this multiplies a seen token's log-prob by ``p``
    (what Hugging Face's beam search does too, since it applies processors to log-softmaxed
    scores). ``p > 1`` discourages repeats, ``p < 1`` encourages them. The positive branch is
    kept so the processor also works on raw logits.
    """

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
        self.penalty = penalty

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if history.shape[1] == 0 or self.penalty == 1.0:
            return log_probs
        seen = log_probs.gather(1, history)
        seen = torch.where(seen > 0, seen / self.penalty, seen * self.penalty)
        return log_probs.scatter(1, history, seen)


class BadWords:
    """Never complete any of ``sequences``: the last token of a banned sequence is masked
    whenever the history ends with the rest of it; single tokens are banned outright."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if any(len(s) == 0 for s in sequences):
            raise ValueError("bad_words: every banned sequence needs at least one token")
        self.single = sorted({s[0] for s in sequences if len(s) == 1})
        self.multi = [list(s) for s in sequences if len(s) > 1]

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        out = log_probs.clone()
        if self.single:
            out[:, self.single] = NEG_INF
        t = history.shape[1]
        for seq in self.multi:
            k = len(seq) - 1
            if t < k:
                continue
            head = torch.tensor(seq[:-1], device=history.device)
            ends_with = (history[:, t - k:] == head).all(dim=1)
            out[ends_with, seq[-1]] = NEG_INF
        return out


class ForcedPrefix:
    """The first ``len(ids)`` outputs are exactly ``ids``; every other token is masked, so the
    forced token keeps its true log-prob (a forced prefix is scored like any other)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if step >= len(self.ids):
            return log_probs
        token = self.ids[step]
        out = torch.full_like(log_probs, NEG_INF)
        out[:, token] = log_probs[:, token]
        return out


class ForcedPrefixes:
    """:class:`ForcedPrefix` with a prefix per sentence: hypothesis row ``r`` is forced to
    ``prefixes[r // group]`` (``group`` = the beam size in beam search, whose rows are
    sentence-major and stay inside their sentence's group; 1 for greedy). A multilingual
    Whisper needs it: each utterance's prompt carries the language detected for it."""

    def __init__(self, prefixes: Sequence[Sequence[int]], group: int = 1) -> None:
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        width = max((len(p) for p in prefixes), default=0)
        table = torch.full((len(prefixes), width), -1, dtype=torch.long)
        for i, prefix in enumerate(prefixes):
            table[i, : len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
        self.table, self.group = table, group

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if step >= self.table.shape[1]:
            return log_probs
        rows = torch.arange(log_probs.shape[0]) // self.group
        token = self.table[rows, step].to(log_probs.device)
        forced = token.ge(0)
        if not bool(forced.any()):
            return log_probs
        keep = torch.full_like(log_probs, NEG_INF)
        index = token.clamp(min=0).unsqueeze(1)
        keep.scatter_(1, index, log_probs.gather(1, index))
        return torch.where(forced.unsqueeze(1), keep, log_probs)


class SuppressTokens:
    """``ids`` are never emitted from step ``from_step`` on (Hugging Face's ``suppress_tokens``
    when ``from_step`` is the length of a forced prompt: HF feeds the prompt as input, so its
    suppression never touches it; here the prompt is forced output, so it must not either)."""

    def __init__(self, ids: Sequence[int], from_step: int = 0) -> None:
        self.ids, self.from_step = sorted({int(i) for i in ids}), from_step

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if step < self.from_step or not self.ids:
            return log_probs
        out = log_probs.clone()
        out[:, self.ids] = NEG_INF
        return out


class SuppressAtStep:
    """``ids`` are banned at exactly step ``step``: Whisper's ``begin_suppress_tokens`` (no
    blank or end of text as the first token after the prompt)."""

    def __init__(self, ids: Sequence[int], step: int) -> None:
        self.ids, self.step = sorted({int(i) for i in ids}), step

    def __call__(self, log_probs: Tensor, history: Tensor, step: int) -> Tensor:
        if step != self.step or not self.ids:
            return log_probs
        out = log_probs.clone()
        out[:, self.ids] = NEG_INF
        return out


def apply_processors(log_probs: Tensor, history: Tensor, step: int,
                     processors: Sequence[Processor], eos_id: int) -> Tensor:
    """Run ``processors`` in order. A hypothesis they leave no token at all (e.g. a minimum
    length with nothing left that ``NoRepeatNGram`` allows) may end with eos, at its true
    log-prob: ending is better than emitting a token the model gives -inf."""
    if not processors:
        return log_probs
    out = log_probs
    for process in processors:
        out = process(out, history, step)
    stuck = ~torch.isfinite(out).any(dim=-1)
    if bool(stuck.any()):
        out = out.clone()
        out[stuck, eos_id] = log_probs[stuck, eos_id]
    return out
