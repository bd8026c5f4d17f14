"""Logits processors: each one's rule on its own, then inside greedy and beam search."""

from __future__ import annotations

import pytest
import torch
from test_search import SRC, random_model, sequence_log_prob

from seqformer.decoding.processors import (
    BadWords,
    ForcedPrefix,
    MinLength,
    NoRepeatNGram,
    RepetitionPenalty,
    apply_processors,
)
from seqformer.decoding.search import beam_search, greedy_search, length_penalty

NEG_INF = float("-inf")
EOS = 2


def uniform(n: int = 2, vocab: int = 9) -> torch.Tensor:
    return torch.full((n, vocab), -2.0)


def outputs(model, processors, beam: int = 4, max_length: int = 20) -> list[list[int]]:
    """Every hypothesis greedy and beam search return (beam n-best included)."""
    greedy = [h.tokens for h in greedy_search(model, SRC, max_length, processors)]
    beams = beam_search(model, SRC, beam=beam, nbest=beam, max_length=max_length,
                        processors=processors)
    return greedy + [h.tokens for hyps in beams for h in hyps]


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeats(tokens: list[int]) -> int:
    return len(tokens) - len(set(tokens))


# -- each rule on a hand-made step ----------------------------------------------------------------
def test_min_length_masks_eos_only_before_n() -> None:
    history = torch.zeros(2, 2, dtype=torch.long)
    out = MinLength(3, EOS)(uniform(), history, 2)
    assert torch.isinf(out[:, EOS]).all() and torch.isfinite(out[:, 3:]).all()
    assert MinLength(3, EOS)(uniform(), torch.zeros(2, 3, dtype=torch.long), 3).equal(uniform())


def test_no_repeat_ngram_bans_the_token_that_would_repeat() -> None:
    history = torch.tensor([[3, 4, 5, 3], [3, 4, 5, 6]])
    out = NoRepeatNGram(2)(uniform(), history, 4)
    assert out[0, 4] == NEG_INF  # "3 4" occurred: 4 may not follow the final 3 again
    assert torch.isfinite(out[0]).sum() == 8 and torch.isfinite(out[1]).all()
    out = NoRepeatNGram(1)(uniform(), history, 4)
    assert torch.isinf(out[1, [3, 4, 5, 6]]).all() and torch.isfinite(out[1, 7])


def test_repetition_penalty_scales_seen_tokens_only() -> None:
    scores = torch.tensor([[-1.0, -2.0, 0.5, -3.0]])
    out = RepetitionPenalty(2.0)(scores, torch.tensor([[1, 2, 1]]), 3)
    assert out.tolist() == [[-1.0, -4.0, 0.25, -3.0]]  # CTRL: x * p if x <= 0 else x / p


def test_bad_words_bans_single_tokens_and_completions() -> None:
    history = torch.tensor([[3, 4], [4, 3]])
    out = BadWords([[6], [3, 4, 5], [3, 7]])(uniform(), history, 2)
    assert torch.isinf(out[:, 6]).all()
    assert out[0, 5] == NEG_INF and out[1, 5] > NEG_INF  # only row 0 ends with "3 4"
    assert out[1, 7] == NEG_INF and out[0, 7] > NEG_INF  # only row 1 ends with "3"


def test_forced_prefix_keeps_the_forced_token_score() -> None:
    scores = torch.randn(2, 9).log_softmax(-1)
    out = ForcedPrefix([5, 7])(scores, torch.zeros(2, 1, dtype=torch.long), 1)
    assert out[:, 7].equal(scores[:, 7]) and torch.isfinite(out).sum() == 2
    assert ForcedPrefix([5, 7])(scores, torch.zeros(2, 2, dtype=torch.long), 2).equal(scores)


def test_a_hypothesis_left_no_token_may_end() -> None:
    history = torch.tensor([[3, 4, 5, 6, 7, 8]])
    out = apply_processors(uniform(1), history, 6, [MinLength(10, EOS), NoRepeatNGram(1),
                                                    BadWords([[1], [0]])], EOS)
    assert torch.isfinite(out).sum() == 1 and out[0, EOS] == -2.0


# -- inside the searches --------------------------------------------------------------------------
def test_min_length_is_respected_by_greedy_and_beam() -> None:
    model = random_model(0)
    assert min(len(t) for t in outputs(model, ())) < 5  # so the test can fail
    assert all(len(t) >= 5 for t in outputs(model, [MinLength(5, model.eos_id)]))


def test_no_ngram_repeats_in_any_hypothesis() -> None:
    model = random_model(1)
    assert any(len(set(ngrams(t, 2))) < len(ngrams(t, 2)) for t in outputs(model, ()))
    for n in (1, 2, 3):
        for tokens in outputs(model, [NoRepeatNGram(n)]):
            assert len(set(ngrams(tokens, n))) == len(ngrams(tokens, n)), (n, tokens)


def test_bad_words_never_appear() -> None:
    model = random_model(1)
    before = outputs(model, ())
    assert any(6 in t for t in before) and any((4, 4) in ngrams(t, 2) for t in before)
    for tokens in outputs(model, [BadWords([[6], [4, 4]])]):
        assert 6 not in tokens and (4, 4) not in ngrams(tokens, 2), tokens


def test_forced_prefix_is_present_and_truly_scored() -> None:
    model = random_model(2)
    prefix = [5, 3, 7]
    for tokens in outputs(model, [ForcedPrefix(prefix)]):
        assert tokens[:3] == prefix
    beams = beam_search(model, SRC, beam=3, nbest=3, max_length=20,
                        processors=[ForcedPrefix(prefix)])
    for i, hyps in enumerate(beams):
        for h in hyps:
            true = sequence_log_prob(model, SRC[i, SRC[i].ne(0)], h.tokens)
            assert h.log_prob == pytest.approx(true, abs=1e-4)
            assert h.score == pytest.approx(true, abs=1e-4)


class FixedModel:
    """Same next-token distribution at every step: token 3 most likely, then 4, eos unlikely.

    It follows the search contract (start / step / state.select), so the true log-prob of any
    output is just the sum of its tokens' fixed log-probs."""

    pad_id, bos_id, eos_id = 0, 1, EOS
    PROBS = [0.0, 0.0, 0.02, 0.6, 0.3, 0.05, 0.03]

    class State:
        def select(self, indices: torch.Tensor) -> FixedModel.State:
            return self

    def __init__(self) -> None:
        self.log_probs = torch.tensor(self.PROBS).log()

    def start(self, src: torch.Tensor) -> FixedModel.State:
        return self.State()

    def step(self, tokens: torch.Tensor, state: FixedModel.State):
        return self.log_probs.expand(tokens.shape[0], -1).clone(), state

    def true_log_prob(self, tokens: list[int]) -> float:
        return float(self.log_probs[tokens + [EOS]].sum())


def adjacent_repeats(tokens: list[int]) -> int:
    return sum(a == b for a, b in zip(tokens, tokens[1:]))


def test_repetition_penalty_reduces_repeats_and_keeps_true_log_probs() -> None:
    model, src = FixedModel(), torch.ones(2, 3, dtype=torch.long)
    plain = greedy_search(model, src, 10)
    penalized = greedy_search(model, src, 10, [RepetitionPenalty(3.0)])
    assert adjacent_repeats(plain[0].tokens) == 8  # 3 3 3 ... until the length bound
    # 3 * log 0.6 = -1.53 < log 0.3: right after a 3, the penalized 3 loses to 4.
    assert penalized[0].tokens[:2] == [3, 4]
    assert adjacent_repeats(penalized[0].tokens) < adjacent_repeats(plain[0].tokens)
    beams = beam_search(model, src, beam=3, nbest=3, max_length=10, alpha=1.0,
                        processors=[RepetitionPenalty(3.0)])
    assert adjacent_repeats(beams[0][0].tokens) < 8
    for h in penalized + [h for hyps in beams for h in hyps]:
        # log_prob is the model's own; score ranks by the penalized scores, which are lower.
        assert h.log_prob == pytest.approx(model.true_log_prob(h.tokens), abs=1e-4)
        if repeats(h.tokens):
            lp = length_penalty(len(h.tokens) + 1, 1.0) if h in beams[0] + beams[1] else 1.0
            assert h.score < h.log_prob / lp - 1e-3


def test_beam_one_equals_greedy_with_processors() -> None:
    model = random_model(3)
    processors = [MinLength(3, model.eos_id), NoRepeatNGram(2), RepetitionPenalty(1.5)]
    greedy = greedy_search(model, SRC, 15, processors)
    beam = beam_search(model, SRC, beam=1, max_length=15, processors=processors)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert g.log_prob == pytest.approx(b[0].log_prob, abs=1e-4)
        assert g.score == pytest.approx(b[0].score, abs=1e-4)


def test_processed_beam_does_not_depend_on_batch() -> None:
    model = random_model(1)
    processors = [NoRepeatNGram(2), BadWords([[6, 4]]), RepetitionPenalty(2.0)]
    together = beam_search(model, SRC, beam=3, max_length=15, processors=processors)
    for i in range(SRC.shape[0]):
        alone = beam_search(model, SRC[i:i + 1, :int(SRC[i].ne(0).sum())], beam=3,
                            max_length=15, processors=processors)
        assert alone[0][0].tokens == together[i][0].tokens


def test_max_length_wins_over_min_length() -> None:
    model = random_model(0)
    for tokens in outputs(model, [MinLength(10, model.eos_id)], max_length=4):
        assert len(tokens) <= 3
