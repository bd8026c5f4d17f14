"""Keeping decoding inside device memory.

Two defences, in order: batches are sized by what decoding really holds (every hypothesis
of every sentence keeps its source and its output so far: ``batch x beam x (source + output
length)`` positions, see :func:`decode_cost`), and if a CUDA out-of-memory error still
happens (fragmentation, another process), :func:`split_on_oom` halves the batch and retries
instead of losing the whole file. Outputs do not depend on batch composition (see
tests/decoding/test_batch_invariance.py), so a split never changes a result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from seqformer.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


def decode_cost(source_len: int, beam: int, max_length: int | None, model_max: int) -> int:
    """Positions one sentence keeps alive during decoding, per hypothesis x beam.

    Without an explicit ``max_length`` the output bound is the one search uses
    (``2 * source + 10``, capped by what the model can embed), so the estimate is an upper
    bound rather than a guess.
    """
    out = max_length or min(model_max - 1, 2 * source_len + 10)
    return beam * (source_len + out)


def split_on_oom(run: Callable[[Sequence[T]], list[R]], items: Sequence[T],
                 on_split: Callable[[int], None] | None = None) -> list[R]:
    """``run(items)``, or on out-of-memory the results of both halves, recursively.

    ``run`` must return one result per item, in order. A single item that still does not fit
    is a user error: nothing smaller can be tried, and the fix (a smaller beam, a shorter
    input, another device) is the user's to choose.
    """
    try:
        return run(items)
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(items) <= 1:
            raise UserError("decoding one input ran out of device memory; lower --beam or "
                            "--max-length, split the input, or use --device cpu") from None
        if on_split:
            on_split(len(items))
        mid = len(items) // 2
        return (split_on_oom(run, items[:mid], on_split)
                + split_on_oom(run, items[mid:], on_split))
