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


def cache_bytes(state) -> int:
    """Bytes the decoder state holds: memory, mask and every key/value buffer."""
    total = state.memory.numel() * state.memory.element_size()
    for c in state.caches:
        for t in (c.self_attn._key_buf, c.self_attn._value_buf, c.cross_attn.key,
                  c.cross_attn.value):
            total += 0 if t is None else t.numel() * t.element_size()
    return total


def test_decoding_memory_grows_linearly_with_beam_times_length() -> None:
    from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=32, heads=4,
                                  layers=2, ffn_dim=64, dropout=0.0, max_len=300)).eval()
    src = torch.randint(4, 20, (2, 10))

    def held(beam: int, steps: int) -> int:
        with torch.no_grad():
            state = model.start(src).select(torch.arange(2).repeat_interleave(beam))
            tokens = torch.full((2 * beam,), model.bos_id)
            for _ in range(steps):
                _, state = model.step(tokens, state)
                state = state.select_beams(torch.arange(2 * beam).view(2, beam).flip(1).reshape(-1))
        return cache_bytes(state)

    base = held(1, 64)
    for beam in (2, 4, 8):
        assert held(beam, 64) == beam * base  # hypotheses x the same per-hypothesis bytes
    # In length: the self-attention buffers double when full, so bytes stay within 2x of
    # proportional, and never grow faster than the number of positions.
    per_length = [held(2, n) for n in (32, 64, 128, 256)]
    growth = [b / a for a, b in zip(per_length, per_length[1:])]
    assert all(g <= 2.0 for g in growth)
