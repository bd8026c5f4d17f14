"""Batches move with to_device: None stays None, values and dtypes survive the move."""

import torch

from seqformer.data.batching import collate_pairs
from seqformer.data.device import to_device
from seqformer.data.lm import LMBatch


def test_none_stays_none_and_tensors_keep_their_values() -> None:
    assert to_device(None, "cpu") is None
    x = torch.arange(6).view(2, 3)
    moved = to_device(x, torch.device("cpu"))
    assert moved.dtype == x.dtype and torch.equal(moved, x)


def test_batches_move_every_field() -> None:
    batch = collate_pairs([[5, 6], [7]], [[8], [9, 10]], [0, 1]).to("cpu")
    assert batch.tgt_in.tolist() == [[1, 8, 0], [1, 9, 10]]
    assert batch.tgt_out.tolist() == [[8, 2, 0], [9, 10, 2]]
    assert batch.src.tolist() == [[5, 6], [7, 0]] and batch.index.tolist() == [0, 1]
    inference = collate_pairs([[5]], None, [0]).to("cpu")
    assert inference.tgt_in is None and inference.tgt_out is None
    lm = LMBatch(torch.tensor([[1, 2]]), torch.tensor([[2, -100]])).to("cpu")
    assert lm.n_tgt_tokens == 1
