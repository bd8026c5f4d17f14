"""Span masks and contrastive negatives against HF wav2vec 2.0's numpy reference functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqformer.data.masking import sample_negatives, span_mask
from seqformer.errors import ConfigError, DataError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each maximal run of True in a 1-D bool tensor."""
    out, start = [], None
    for t, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            out.append((start, t - start))
            start = None
    return out


def test_masked_share_matches_hf_compute_mask_indices() -> None:
    wav2vec2 = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    np.random.seed(0)
    hf = np.concatenate([wav2vec2._compute_mask_indices((8, 500), 0.65, 10, min_masks=2)
                         for _ in range(50)])
    ours = span_mask(torch.full((400,), 500), 500, 0.65, 10, gen(0))
    hf_share, our_share = float(hf.mean()), float(ours.float().mean())
    # Independent placement would give 1 - (1 - 0.065) ** 10 ~ 0.49.
    assert 0.45 < hf_share < 0.53
    assert abs(our_share - hf_share) < 0.01
    # The spread across utterances matches too, not only the mean.
    assert abs(float(ours.float().mean(1).std()) - float(hf.mean(1).std())) < 0.01


def test_exact_span_count_gives_runs_of_mask_length_unless_spans_touch() -> None:
    # 0.25 * 200 / 10 = 5 exactly, so every row has 5 distinct starts whatever the rounding.
    mask = span_mask(torch.full((300,), 200), 200, 0.25, 10, gen(1), min_masks=0)
    separate = 0
    for row in mask:
        found = runs(row)
        assert all(length >= 10 for _, length in found)
        assert sum(length for _, length in found) <= 50
        if len(found) == 5:  # no two spans overlap or abut: each run is one whole span
            separate += 1
            assert [length for _, length in found] == [10] * 5
            assert int(row.sum()) == 50
    assert separate > 50


def test_padding_is_never_masked_and_spans_stay_inside() -> None:
    frames = torch.tensor([500, 123, 37, 10, 0, 311])
    for seed in range(20):
        mask = span_mask(frames, 500, 0.65, 10, gen(seed))
        assert mask.shape == (6, 500) and mask.dtype == torch.bool
        for b, n in enumerate(frames.tolist()):
            assert not mask[b, n:].any()
        assert mask[0].any() and mask[1].any() and mask[2].any()


def test_deterministic_given_the_generator() -> None:
    frames = torch.tensor([400, 250, 90])
    a = span_mask(frames, 400, 0.65, 10, gen(7))
    b = span_mask(frames, 400, 0.65, 10, gen(7))
    c = span_mask(frames, 400, 0.65, 10, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_min_masks_sets_a_floor_of_distinct_spans() -> None:
    mask = span_mask(torch.full((200,), 300), 300, 0.0, 5, gen(2), min_masks=2)
    counts = mask.sum(1)
    # Two distinct starts: between 6 (overlapping by 4) and 10 masked frames.
    assert int(counts.min()) >= 6 and int(counts.max()) == 10
    assert not span_mask(torch.full((5,), 300), 300, 0.0, 5, gen(2), min_masks=0).any()


def test_short_utterances_get_no_mask_and_the_count_is_capped() -> None:
    frames = torch.tensor([9, 10, 35])
    for seed in range(20):
        mask = span_mask(frames, 40, 1.0, 10, gen(seed), min_masks=2)
        assert not mask[0].any()  # shorter than one span
        assert mask[1, :10].all()  # room for exactly one span, which covers it
        # 3.5 + u spans wanted, capped at 35 // 10 = 3 distinct starts in [0, 25].
        assert 11 <= int(mask[2].sum()) <= 30


def test_span_mask_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="frame counts"):
        span_mask(torch.tensor([501]), 500, 0.5, 10, gen(0))
    with pytest.raises(DataError, match="integer tensor"):
        span_mask(torch.tensor([5.0]), 500, 0.5, 10, gen(0))
    with pytest.raises(ConfigError, match="mask_prob"):
        span_mask(torch.tensor([5]), 500, 1.5, 10, gen(0))
    with pytest.raises(ConfigError, match="mask_length"):
        span_mask(torch.tensor([5]), 500, 0.5, 0, gen(0))


def check_negatives(idx: torch.Tensor, allowed: torch.Tensor) -> None:
    """Every allowed frame's distractors: same utterance, allowed, never the frame itself."""
    batch, total, _ = idx.shape
    rows = torch.arange(batch).view(batch, 1, 1).expand_as(idx)
    frames = torch.arange(total).view(1, total, 1).expand_as(idx)
    assert torch.equal(idx // total, rows)
    sel = allowed.unsqueeze(2).expand_as(idx)
    local = idx % total
    assert (local[sel] != frames[sel]).all()
    assert allowed[rows[sel], local[sel]].all()


def test_negatives_are_other_allowed_frames_of_the_same_utterance() -> None:
    frames = torch.tensor([120, 80, 120, 30])
    allowed = span_mask(frames, 120, 0.65, 10, gen(3))
    idx = sample_negatives(allowed, 100, gen(4))
    assert idx.shape == (4, 120, 100) and idx.dtype == torch.long
    check_negatives(idx, allowed)
    # Rows of frames that are not allowed point at the frame itself.
    own = (torch.arange(120) + (torch.arange(4) * 120).view(4, 1)).unsqueeze(2).expand_as(idx)
    off = (~allowed).unsqueeze(2).expand_as(idx)
    assert torch.equal(idx[off], own[off])


def test_structure_matches_hf_sample_negative_indices() -> None:
    wav2vec2 = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    allowed = span_mask(torch.full((3,), 60), 60, 0.65, 5, gen(5))
    np.random.seed(0)
    hf = torch.as_tensor(wav2vec2._sample_negative_indices((3, 60), 10, allowed.numpy())).long()
    ours = sample_negatives(allowed, 10, gen(6))
    assert hf.shape == ours.shape
    check_negatives(hf, allowed)  # HF's own output obeys the invariants we test ours by
    check_negatives(ours, allowed)


def test_negatives_are_uniform_over_the_other_allowed_frames() -> None:
    allowed = torch.zeros(1, 40, dtype=torch.bool)
    allowed[0, [3, 4, 5, 17, 30, 31]] = True
    idx = sample_negatives(allowed, 6000, gen(9))
    picks = idx[0, 17]
    counts = torch.bincount(picks, minlength=40)
    assert int(counts[17]) == 0
    share = counts[[3, 4, 5, 30, 31]].double() / 6000
    assert float((share - 0.2).abs().max()) < 0.02  # 5 others, 1/5 each (sd ~ 0.005)


def test_too_few_allowed_frames_point_at_themselves() -> None:
    allowed = torch.zeros(3, 8, dtype=torch.bool)
    allowed[0, 2] = True  # one allowed frame: nothing to contrast with
    allowed[2, [1, 6]] = True  # two: each is the other's only distractor
    idx = sample_negatives(allowed, 4, gen(0))
    assert torch.equal(idx[0], torch.arange(8).view(8, 1).expand(8, 4))
    assert torch.equal(idx[1], (8 + torch.arange(8)).view(8, 1).expand(8, 4))
    assert (idx[2, 1] == 16 + 6).all() and (idx[2, 6] == 16 + 1).all()


def test_negatives_deterministic_and_checked() -> None:
    allowed = span_mask(torch.tensor([50, 40]), 50, 0.65, 5, gen(1))
    assert torch.equal(sample_negatives(allowed, 5, gen(2)), sample_negatives(allowed, 5, gen(2)))
    assert not torch.equal(sample_negatives(allowed, 5, gen(2)),
                           sample_negatives(allowed, 5, gen(3)))
    with pytest.raises(DataError, match="bool"):
        sample_negatives(allowed.long(), 5, gen(0))
    with pytest.raises(ConfigError, match="num_negatives"):
        sample_negatives(allowed, 0, gen(0))
