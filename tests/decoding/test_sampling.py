"""Sampling: reproducible with a seed, never outside the kept set, greedy at temperature 0."""

from __future__ import annotations

import pytest
import torch

from seqformer.decoding.sampling import (
    generate,
    keep_top_k,
    keep_top_p,
    make_processors,
    penalize_repetition,
    sample_next,
)
from seqformer.models.gpt import GPT, GPTConfig

V = 40


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, d_model=16, heads=2, layers=1, ffn_dim=32,
                         dropout=0.0, max_len=32)).eval()


def draw(model: GPT, seed: int, **kwargs) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.tensor([[1, 5, 6], [1, 7, 8]])
    return [t.tolist() for t in generate(model, prompt, 12, generator=gen, **kwargs)]


def test_same_seed_same_samples_different_seed_different() -> None:
    model = tiny()
    assert draw(model, 1, top_k=20) == draw(model, 1, top_k=20)
    assert draw(model, 1) != draw(model, 2)


def test_temperature_zero_is_argmax() -> None:
    model = tiny()
    prompt = torch.tensor([[1, 5, 6]])
    greedy = [int(t) for t in generate(model, prompt, 10, temperature=0.0)]
    tokens = prompt
    for token in greedy:
        logits = model.logits(tokens)[0, -1]
        logits[[0, 1]] = float("-inf")  # pad and bos are never emitted
        assert token == int(logits.argmax())
        tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)


def kept_by_top_p(logits: torch.Tensor, p: float) -> set[int]:
    """The nucleus computed the slow, obvious way: add tokens by probability until >= p."""
    probs = logits.softmax(-1).tolist()
    kept, total = set(), 0.0
    for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
        kept.add(i)
        total += probs[i]
        if total >= p:
            break
    return kept


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_never_emits_outside_the_k_best(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, V, generator=gen) * 3
    allowed = [set(row.topk(k).indices.tolist()) for row in logits]
    seen: list[set[int]] = [set() for _ in range(4)]
    for _ in range(500):
        picks = sample_next(logits, torch.zeros(4, 0, dtype=torch.long), [keep_top_k(k)], gen)
        for row, token in enumerate(picks.tolist()):
            seen[row].add(token)
    for row in range(4):
        assert seen[row] <= allowed[row]
    assert len(set.union(*seen)) > (1 if k > 1 else 0)  # really sampling, not argmax


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
def test_top_p_never_emits_outside_the_nucleus(p: float) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, V, generator=gen) * 2
    allowed = [kept_by_top_p(row, p) for row in logits]
    processors = make_processors(top_p=p)
    seen: list[set[int]] = [set() for _ in range(4)]
    for _ in range(500):
        picks = sample_next(logits, torch.zeros(4, 0, dtype=torch.long), processors, gen)
        for row, token in enumerate(picks.tolist()):
            seen[row].add(token)
    for row in range(4):
        assert seen[row] <= allowed[row]
    if p < 1.0:
        assert any(len(a) < V for a in allowed)  # the test really restricts something


def test_top_p_processor_keeps_the_most_likely_token_even_for_tiny_p() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    out = keep_top_p(1e-6)(logits, torch.zeros(1, 0, dtype=torch.long))
    assert torch.isfinite(out).tolist() == [[False, True, False]]


def test_repetition_penalty_lowers_seen_tokens_only() -> None:
    logits = torch.tensor([[2.0, -1.0, 3.0]])
    out = penalize_repetition(2.0)(logits, torch.tensor([[0, 1]]))
    assert out.tolist() == [[1.0, -2.0, 3.0]]


def test_eos_ends_generation_and_bad_settings_are_refused() -> None:
    model = tiny()
    first = int(next(generate(model, torch.tensor([[1, 5]]), 5, temperature=0.0)))
    out = list(generate(model, torch.tensor([[1, 5]]), 5, temperature=0.0, eos_id=first))
    assert [int(t) for t in out] == [first]
    with pytest.raises(ValueError, match="top_p"):
        keep_top_p(1.5)
    with pytest.raises(ValueError, match="top_k"):
        keep_top_k(0)


def test_search_controls_apply_to_sampling_too() -> None:
    from seqformer.decoding.processors import BadWords, MinLength, NoRepeatNGram

    def samples(seed: int, control) -> list[list[int]]:
        rows = zip(*draw(model, seed, temperature=1.5, eos_id=3, controls=[control]))
        return [list(r)[:list(r).index(3)] if 3 in r else list(r) for r in rows]

    model = tiny()
    for seed in range(3):
        rows = samples(seed, NoRepeatNGram(1))
        assert all(len(set(r)) == len(r) for r in rows)  # no token twice within a sample
        assert all(7 not in r and 9 not in r for r in samples(seed, BadWords([[7], [9]])))
    # eos (3) cannot come before 10 new tokens; without the control this model ends early.
    gen = torch.Generator().manual_seed(0)
    steps = [t.tolist() for t in generate(model, torch.tensor([[1, 5]]), 12, generator=gen,
                                          eos_id=3, controls=[MinLength(10, 3)])]
    assert len(steps) >= 10 and all(s[0] != 3 for s in steps[:10])
    with pytest.raises(ValueError, match="eos_id"):
        next(generate(model, torch.tensor([[1, 5]]), 3, controls=[MinLength(2, 3)]))
