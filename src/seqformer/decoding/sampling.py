"""Sampling from a language model: logits processors and a streaming ``generate``.

A processor maps logits (batch, vocab) to logits; masking sets a logit to -inf, so softmax gives
the token exactly zero probability and it can never be drawn. Processors compose in the order
GPT-2 / Hugging Face apply them: repetition penalty, temperature, top-k, then top-p, so the
nucleus is computed on the distribution the sample is actually drawn from.

``generate`` uses the model's ``start`` / ``step`` contract (the KV cache: each new token costs
one position, never a re-run of the prefix) and yields tokens as they are made, for streaming.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from seqformer.decoding.processors import Processor as SearchProcessor
from seqformer.decoding.processors import apply_processors

Processor = Callable[[Tensor, Tensor], Tensor]  # (logits, tokens so far) -> logits


def scale_temperature(value: float) -> Processor:
    """Divide logits by ``value``: < 1 sharpens the distribution, > 1 flattens it."""
    if value <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (0 means greedy), got {value}")
    return lambda logits, _: logits / value


def keep_top_k(k: int) -> Processor:
    """Keep the ``k`` most likely tokens (Fan et al., 2018); ties at the k-th value stay in."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")

    def process(logits: Tensor, _: Tensor) -> Tensor:
        kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return process


def keep_top_p(p: float) -> Processor:
    """Nucleus sampling (Holtzman et al., 2020): keep the smallest set of most likely tokens
    whose probabilities sum to at least ``p``; the single most likely token is always kept."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")

    def process(logits: Tensor, _: Tensor) -> Tensor:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # A token is dropped when the tokens ranked above it already reach p.
        before = probs.cumsum(dim=-1) - probs
        drop_sorted = before >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    return process


def penalize_repetition(penalty: float) -> Processor:
    """CTRL's penalty (Keskar et al., 2019): make tokens already present less likely by dividing
    positive logits (multiplying negative ones) by ``penalty`` > 1."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")

    def process(logits: Tensor, tokens: Tensor) -> Tensor:
        seen = logits.gather(-1, tokens)
        seen = torch.where(seen > 0, seen / penalty, seen * penalty)
        return logits.scatter(-1, tokens, seen)

    return process


def make_processors(temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None,
                    repetition_penalty: float | None = None) -> list[Processor]:
    """The processors for the usual knobs; None / 0 / 1.0 mean "off"."""
    processors: list[Processor] = []
    if repetition_penalty and repetition_penalty != 1.0:
        processors.append(penalize_repetition(repetition_penalty))
    if temperature != 1.0:
        processors.append(scale_temperature(temperature))
    if top_k:
        processors.append(keep_top_k(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(keep_top_p(top_p))
    return processors


def sample_next(logits: Tensor, tokens: Tensor, processors: Sequence[Processor],
                generator: torch.Generator | None) -> Tensor:
    """One token per row (batch,) drawn from the processed distribution."""
    for process in processors:
        logits = process(logits, tokens)
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model,
    prompt_ids: Tensor,
    max_new: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    repetition_penalty: float | None = None,
    suppress: Sequence[int] = (0, 1),
    controls: Sequence[SearchProcessor] = (),
) -> Iterator[Tensor]:
    """Yield the next token of every row (batch,) up to ``max_new`` times, as soon as it exists.

    ``prompt_ids`` is (batch, time >= 1), unpadded (start it with BOS for an empty prompt).
    ``temperature == 0`` is greedy (argmax) decoding. Rows that emitted ``eos_id`` keep yielding
    it; generation ends once every row has. Tokens in ``suppress`` (default pad and bos) are
    never emitted. Stop strings are text, so the caller checks them and simply stops iterating.
    ``controls`` are the masking processors of :mod:`seqformer.decoding.processors` (minimum
    length, no-repeat n-gram, bad words, forced prefix), applied first, on the tokens generated
    so far (the prompt is not part of their history), so the same flags work for sampling as
    for beam search.

    When the context ``model.config.max_len`` fills up, the model is restarted on the most
    recent half-context: learned positions cannot go further, and re-running half a context once
    every max_len / 2 tokens keeps the cost per token near that of the cache.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if controls and eos_id is None:
        raise ValueError("controls need eos_id: a row they leave no token may only end")
    # Greedy still applies the repetition penalty; top-k/top-p cannot change the argmax.
    processors = make_processors(temperature or 1.0, top_k, top_p, repetition_penalty)
    context = model.config.max_len
    tokens = prompt_ids[:, -context:]
    state = model.start(tokens)
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    history = tokens[:, :0]  # generated so far, for the controls
    for i in range(max_new):
        logits = state.log_probs.clone()
        if suppress:
            logits[:, list(suppress)] = float("-inf")
        if controls:
            logits = apply_processors(logits, history, i, controls, eos_id)
        if temperature == 0:
            for process in processors:
                logits = process(logits, tokens)
            next_tokens = logits.argmax(dim=-1)
        else:
            next_tokens = sample_next(logits, tokens, processors, generator)
        if eos_id is not None:
            next_tokens = torch.where(done, torch.full_like(next_tokens, eos_id), next_tokens)
            done |= next_tokens.eq(eos_id)
        yield next_tokens
        if i == max_new - 1 or (eos_id is not None and bool(done.all())):
            return
        tokens = torch.cat([tokens, next_tokens.unsqueeze(1)], dim=1)
        history = torch.cat([history, next_tokens.unsqueeze(1)], dim=1)
        if state.step >= context:
            state = model.start(tokens[:, -(context // 2 or 1):])
        else:
            _, state = model.step(next_tokens, state)
