"""Out-of-memory during decoding splits the batch and retries; the budget counts beam x length."""

from __future__ import annotations

import pytest
import torch

from seqformer.decoding.memory import decode_cost, split_on_oom
from seqformer.errors import UserError


def fake_decoder(limit: int, calls: list[int]):
    """Decodes (doubles) items, but "runs out of memory" above ``limit`` items at once."""
    def run(items):
        calls.append(len(items))
        if len(items) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [2 * x for x in items]
    return run


def test_an_oom_splits_the_batch_and_keeps_every_result_in_order() -> None:
    calls: list[int] = []
    splits: list[int] = []
    items = list(range(13))
    assert split_on_oom(fake_decoder(3, calls), items, splits.append) == [2 * x for x in items]
    assert max(c for c in calls if c <= 3) <= 3 and calls[0] == 13
    assert splits[0] == 13 and all(s > 3 for s in splits)


def test_one_item_that_cannot_fit_is_a_clear_user_error() -> None:
    with pytest.raises(UserError, match="lower --beam"):
        split_on_oom(fake_decoder(0, []), [1, 2])


def test_other_errors_are_not_swallowed() -> None:
    def broken(items):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        split_on_oom(broken, [1, 2, 3])


def test_decode_cost_counts_beam_times_source_plus_output() -> None:
    assert decode_cost(10, beam=5, max_length=None, model_max=256) == 5 * (10 + 30)
    assert decode_cost(10, beam=1, max_length=7, model_max=256) == 17
    assert decode_cost(200, beam=2, max_length=None, model_max=64) == 2 * (200 + 63)
