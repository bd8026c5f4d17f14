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


def test_stream_batches_equal_collated_ids() -> None:
    """The stream gathers from whole-corpus tensors; each batch must be what collate_pairs
    builds from the same examples' ids."""
    src, tgt = toy_data(200, seed=3)
    stream = BatchStream(src, tgt, max_tokens=40, seed=2)
    epoch = stream.batches_per_epoch
    for batch in islice(iter(stream), 2 * epoch):
        idx = batch.index.tolist()
        expected = collate_pairs([src[i] for i in idx], [tgt[i] for i in idx], idx)
        assert same(batch, expected)


def test_fixed_shapes_pad_rows_and_columns() -> None:
    src, tgt = toy_data(300, seed=4)
    budget, pad_to = 64, 8
    stream = BatchStream(src, tgt, max_tokens=budget, seed=1, pad_to=pad_to)
    shapes, fillers = set(), 0
    for batch in islice(iter(stream), 2 * stream.batches_per_epoch):
        rows, width = batch.src.shape
        assert width % pad_to == 0 and rows == max(1, budget // width)
        assert batch.tgt_in.shape == batch.tgt_out.shape == (rows, width)
        shapes.add((rows, width))
        real = batch.index >= 0
        idx = batch.index[real].tolist()
        plain = collate_pairs([src[i] for i in idx], [tgt[i] for i in idx], idx)
        for name in ("src", "tgt_in", "tgt_out"):
            got, want = getattr(batch, name)[real], getattr(plain, name)
            assert torch.equal(got[:, : want.shape[1]], want)
            assert not got[:, want.shape[1]:].any()  # only padding beyond
        fill = ~real
        fillers += int(fill.sum())
        assert not batch.tgt_out[fill].any()  # no loss on filler rows
        assert torch.equal(batch.src[fill], batch.src[:1].expand(int(fill.sum()), -1))
    assert fillers > 0
    longest = max(max(len(s), len(t) + 1) for s, t in zip(src, tgt, strict=True))
    assert len(shapes) <= -(-longest // pad_to)  # one shape per width bucket


def test_fixed_shapes_leave_loss_and_gradients_unchanged() -> None:
    """Filler rows and extra padding columns must not change what training computes."""
    from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig

    src, tgt = toy_data(120, seed=5)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=32, tgt_vocab_size=32, d_model=16, heads=2,
                                  layers=2, ffn_dim=32, dropout=0.0, label_smoothing=0.1))
    stream = BatchStream(src, tgt, max_tokens=64, seed=1, pad_to=8)
    checked = 0
    for batch in islice(iter(stream), stream.batches_per_epoch):
        if bool((batch.index >= 0).all()):
            continue
        idx = batch.index[batch.index >= 0].tolist()
        plain = collate_pairs([src[i] for i in idx], [tgt[i] for i in idx], idx)
        grads = []
        for b in (batch, plain):
            model.zero_grad()
            out = model(b)
            out.loss.backward()
            grads.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
        (loss_a, grads_a), (loss_b, grads_b) = grads
        assert torch.allclose(loss_a, loss_b, atol=1e-6)
        for a, b in zip(grads_a, grads_b, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
        checked += 1
    assert checked >= 2


def test_fixed_shapes_resume_checks_pad_to() -> None:
    src, tgt = toy_data()
    state = BatchStream(src, tgt, max_tokens=40, seed=1, pad_to=8).state_dict()
    with pytest.raises(CheckpointError, match="pad_to"):
        BatchStream(src, tgt, max_tokens=40, seed=1).load_state_dict(state)
    plain = BatchStream(src, tgt, max_tokens=40, seed=1).state_dict()
    assert "pad_to" not in plain  # runs saved before the option resume unchanged
