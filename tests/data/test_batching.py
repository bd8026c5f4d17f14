"""Batching: padding/shift, token budget, coverage, determinism and exact resume."""

from __future__ import annotations

import random
from itertools import islice

import pytest
import torch

from seqformer.data.batching import BatchStream, Seq2SeqBatch, collate_pairs, token_budget_batches
from seqformer.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqformer.errors import CheckpointError


def toy_data(n: int = 60, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    src = [[rng.randrange(4, 30) for _ in range(rng.randrange(1, 15))] for _ in range(n)]
    tgt = [[rng.randrange(4, 30) for _ in range(rng.randrange(1, 12))] for _ in range(n)]
    return src, tgt


def same(a: Seq2SeqBatch, b: Seq2SeqBatch) -> bool:
    fields = ("src", "tgt_in", "tgt_out", "index")
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


def test_collate_shapes_and_shift() -> None:
    batch = collate_pairs([[5, 6, 7], [8]], [[9], [10, 11, 12]], [4, 2])
    assert len(batch) == 2 and batch.src.shape == (2, 3)
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID, PAD_ID], [BOS_ID, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID, PAD_ID], [10, 11, 12, EOS_ID]]
    assert batch.index.tolist() == [4, 2] and batch.index.dtype == torch.long
    assert batch.n_tgt_tokens == 6
    real = batch.tgt_in[:, 1:] != PAD_ID  # positions where the shifted input holds a token
    assert torch.equal(batch.tgt_in[:, 1:][real], batch.tgt_out[:, :-1][real])
    assert torch.equal((batch.tgt_in != PAD_ID).sum(1), (batch.tgt_out != PAD_ID).sum(1))
    moved = batch.to("cpu")
    assert moved is not batch and same(moved, batch)


def test_collate_source_only() -> None:
    batch = collate_pairs([[5], [6, 7]], None, [0, 1])
    assert batch.tgt_in is None and batch.tgt_out is None and batch.n_tgt_tokens == 0
    assert batch.to("cpu").src.shape == (2, 2)


@pytest.mark.parametrize("shuffle", [False, True])
def test_budget_respected_and_every_index_once(shuffle: bool) -> None:
    lengths = [random.Random(i).randrange(1, 40) for i in range(500)] + [300]
    batches = token_budget_batches(lengths, max_tokens=200, shuffle=shuffle, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1
    assert [len(lengths) - 1] in batches  # the over-long example forms its own batch
    if not shuffle:
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(flat)


def test_budget_deterministic_per_seed_and_epoch() -> None:
    lengths = [i % 17 + 1 for i in range(300)]
    run = lambda seed, epoch: token_budget_batches(lengths, 120, True, seed, epoch)  # noqa: E731
    assert run(1, 0) == run(1, 0)
    assert run(1, 0) != run(1, 1)
    assert run(1, 0) != run(2, 0)
    assert len(run(1, 0)) == len(run(1, 5))


def test_stream_covers_each_epoch_once() -> None:
    src, tgt = toy_data()
    stream = BatchStream(src, tgt, max_tokens=64, seed=0)
    per_epoch = stream.batches_per_epoch
    batches = list(islice(iter(stream), 2 * per_epoch))
    for epoch in range(2):
        seen = torch.cat([b.index for b in batches[epoch * per_epoch : (epoch + 1) * per_epoch]])
        assert sorted(seen.tolist()) == list(range(len(src)))
    assert stream.epoch == 1 and stream.position == per_epoch
    for b in batches:
        assert len(b) * max(b.src.shape[1], b.tgt_in.shape[1]) <= 64 or len(b) == 1


@pytest.mark.parametrize("consumed", [7, 9])  # 9 makes the next five cross an epoch boundary
def test_stream_resume_is_exact(consumed: int) -> None:
    src, tgt = toy_data()
    original = BatchStream(src, tgt, max_tokens=128, seed=5)
    assert original.batches_per_epoch < consumed + 5
    it = iter(original)
    list(islice(it, consumed))
    state = original.state_dict()
    assert all(isinstance(v, int) for v in state.values())
    expected = list(islice(it, 5))

    resumed = BatchStream(src, tgt, max_tokens=128, seed=5)
    resumed.load_state_dict(dict(state))
    got = list(islice(iter(resumed), 5))
    assert all(same(a, b) for a, b in zip(expected, got, strict=True))

    fresh = list(islice(iter(BatchStream(src, tgt, max_tokens=128, seed=5)), 5))
    assert not all(same(a, b) for a, b in zip(expected, fresh, strict=True))


def test_stream_refuses_state_from_other_data() -> None:
    src, tgt = toy_data()
    state = BatchStream(src, tgt, max_tokens=128, seed=5).state_dict()
    with pytest.raises(CheckpointError, match="seed"):
        BatchStream(src, tgt, max_tokens=128, seed=6).load_state_dict(state)
    with pytest.raises(CheckpointError, match="num_examples"):
        BatchStream(src[:-1], tgt[:-1], max_tokens=128, seed=5).load_state_dict(state)
