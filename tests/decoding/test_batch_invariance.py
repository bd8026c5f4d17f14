"""The best hypothesis for a sentence must not depend on the batch it is decoded in."""

from __future__ import annotations

import random

import pytest
import torch

from seqformer.data.batching import collate_pairs
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def decode(model: Seq2Seq, sources: list[list[int]], beam: int) -> list[list[int]]:
    src = collate_pairs(sources, None, list(range(len(sources)))).src
    if beam == 1:
        return [h.tokens for h in greedy_search(model, src, max_length=20)]
    return [n[0].tokens for n in beam_search(model, src, beam=beam, max_length=20)]


@pytest.mark.parametrize("beam", [1, 4])
def test_outputs_alone_equal_outputs_in_shuffled_batches(beam: int) -> None:
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=32, heads=4,
                                  layers=2, ffn_dim=64, dropout=0.0, max_len=40,
                                  tie_output=False, norm_first=False)).eval()
    with torch.no_grad():
        model.output.weight[model.eos_id].mul_(5.0)  # make eos compete: outputs vary in length
    rng = random.Random(1)
    sources = [[rng.randrange(4, 20) for _ in range(rng.randint(1, 12))] for _ in range(50)]
    alone = [decode(model, [s], beam)[0] for s in sources]
    assert len({tuple(a) for a in alone}) > 10  # a real variety of outputs, not one string
    for size in (7, 32):
        order = list(range(50))
        rng.shuffle(order)
        batched: dict[int, list[int]] = {}
        for start in range(0, 50, size):
            chunk = order[start:start + size]
            for i, out in zip(chunk, decode(model, [sources[i] for i in chunk], beam)):
                batched[i] = out
        assert [batched[i] for i in range(50)] == alone
