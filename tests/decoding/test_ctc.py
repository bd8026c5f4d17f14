"""CTC greedy and prefix beam search against brute force over every path and torch's ctc_loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqformer.decoding.ctc import ctc_beam_search, ctc_greedy
from seqformer.errors import ConfigError, DataError


def random_log_probs(batch: int, frames: int, vocab: int, seed: int, peaky: float = 3.0
                     ) -> torch.Tensor:
    """Log-softmax of scaled Gaussian logits: peaky enough for repeats and blank runs."""
    g = torch.Generator().manual_seed(seed)
    return (peaky * torch.randn(batch, frames, vocab, generator=g, dtype=torch.float64)
            ).log_softmax(-1)


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    out, previous = [], None
    for s in path:
        if s != previous and s != blank:
            out.append(s)
        previous = s
    return tuple(out)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> list[tuple[tuple[int, ...], float]]:
    """Every labeling with its log-probability (log-sum over all V^T paths), best first."""
    frames, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        score = float(sum(log_probs[t, s] for t, s in enumerate(path)))
        key = collapse(path, blank)
        totals[key] = float(np.logaddexp(totals.get(key, -math.inf), score))
    return sorted(totals.items(), key=lambda kv: -kv[1])


def ctc_log_prob(log_probs: torch.Tensor, labeling: list[int], blank: int = 0) -> float:
    loss = F.ctc_loss(log_probs.unsqueeze(1), torch.tensor(labeling, dtype=torch.long),
                      torch.tensor([log_probs.shape[0]]), torch.tensor([len(labeling)]),
                      blank=blank, reduction="sum")
    return -float(loss)


def test_greedy_equals_a_naive_reference() -> None:
    lp = random_log_probs(6, 15, 5, seed=0).repeat_interleave(2, dim=1)  # repeats to merge
    lengths = torch.tensor([30, 0, 1, 17, 29, 30])
    expected = []
    for b in range(6):
        out, previous = [], None
        for t in range(int(lengths[b])):
            s = int(lp[b, t].argmax())
            if s != previous and s != 0:
                out.append(s)
            previous = s
        expected.append(out)
    assert ctc_greedy(lp, lengths) == expected
    unmerged = [[s for s in lp[b, : int(n)].argmax(-1).tolist() if s != 0]
                for b, n in enumerate(lengths)]
    assert sum(map(len, unmerged)) > sum(map(len, expected)) > 0  # not vacuous
    assert ctc_greedy(lp[:1]) == expected[:1]


@pytest.mark.parametrize("frames,vocab,seed", [(1, 2, 0), (2, 3, 1), (3, 2, 2), (4, 3, 3),
                                               (5, 2, 4), (5, 3, 5), (5, 3, 6), (4, 3, 7)])
def test_full_beam_is_exact_on_tiny_cases(frames: int, vocab: int, seed: int) -> None:
    lp = random_log_probs(1, frames, vocab, seed, peaky=1.0)
    truth = brute_force(lp[0])
    prefixes = sum((vocab - 1) ** n for n in range(frames + 1))  # every labeling can fit
    nbest = min(prefixes, 4)
    found = ctc_beam_search(lp, beam=prefixes, nbest=nbest)[0]
    assert len(found) == nbest
    for (labeling, score), (true_labeling, true_score) in zip(found, truth):
        assert tuple(labeling) == true_labeling
        assert abs(score - true_score) < 1e-9
        assert abs(score - ctc_log_prob(lp[0], labeling)) < 1e-5


def test_a_narrow_beam_is_never_better_than_a_wide_one() -> None:
    lp = random_log_probs(12, 25, 6, seed=11, peaky=1.5)
    narrow = ctc_beam_search(lp, beam=1)
    wide = ctc_beam_search(lp, beam=8, nbest=3)
    strictly_better = 0
    for n, w in zip(narrow, wide):
        assert n[0][1] <= w[0][1] + 1e-12
        assert w[0][1] >= w[1][1] >= w[2][1]  # best first
        assert len({tuple(labeling) for labeling, _ in w}) == 3
        strictly_better += n[0][1] < w[0][1] - 1e-9
    assert strictly_better > 0  # the comparison is not vacuous
    for b in range(12):  # a score sums the alignments the beam kept: never above the truth
        labeling, score = wide[b][0]
        assert score <= ctc_log_prob(lp[b], labeling) + 1e-6


def test_beam_search_ranks_labelings_not_paths() -> None:
    # The best path is [blank, blank] (0.36), but "a" has paths a-a, a-blank, blank-a summing
    # to 0.64: greedy says "", the labeling search says "a".
    p = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]], dtype=torch.float64)
    assert ctc_greedy(p.log()) == [[]]
    (labeling, score), = ctc_beam_search(p.log(), beam=2)[0]
    assert labeling == [1] and abs(score - math.log(0.64)) < 1e-12


def test_frames_past_length_are_ignored_and_rows_are_independent() -> None:
    lp = random_log_probs(4, 20, 5, seed=3)
    lengths = torch.tensor([20, 7, 0, 13])
    noisy = lp.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy[b, n:] = random_log_probs(1, 20 - n, 5, seed=100 + b)[0]
    batched = ctc_beam_search(noisy, lengths, beam=4, nbest=2)
    assert ctc_greedy(noisy, lengths) == ctc_greedy(lp, lengths)
    assert batched == ctc_beam_search(lp, lengths, beam=4, nbest=2)
    for b, n in enumerate(lengths.tolist()):
        alone = ctc_beam_search(lp[b : b + 1, :n], beam=4, nbest=2)[0]
        assert batched[b] == alone
        assert ctc_greedy(lp[b : b + 1, :n]) == [ctc_greedy(lp, lengths)[b]]
    assert batched[2] == [([], 0.0)]


def test_blank_id_is_honoured() -> None:
    lp = random_log_probs(3, 12, 4, seed=5)
    moved = lp[..., [3, 1, 2, 0]]  # blank now at id 3, label 3 at id 0
    rename = {1: 1, 2: 2, 3: 0}
    assert ctc_greedy(moved, blank=3) == [[rename[s] for s in row] for row in ctc_greedy(lp)]
    ours = ctc_beam_search(lp, beam=4)
    theirs = ctc_beam_search(moved, beam=4, blank=3)
    for (a, sa), (b, sb) in zip((r[0] for r in ours), (r[0] for r in theirs)):
        assert [rename[s] for s in a] == b and abs(sa - sb) < 1e-12


def test_bad_input_is_refused() -> None:
    lp = random_log_probs(2, 5, 3, seed=0)
    with pytest.raises(DataError, match="batch, frames, vocab"):
        ctc_greedy(lp[0])
    with pytest.raises(DataError, match="lengths"):
        ctc_greedy(lp, torch.tensor([5, 6]))
    with pytest.raises(DataError, match="lengths"):
        ctc_beam_search(lp, torch.tensor([5]))
    with pytest.raises(ConfigError, match="blank"):
        ctc_greedy(lp, blank=3)
    with pytest.raises(ConfigError, match="nbest"):
        ctc_beam_search(lp, beam=2, nbest=3)
    with pytest.raises(ConfigError, match="beam"):
        ctc_beam_search(lp, beam=0)
