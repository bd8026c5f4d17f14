"""Fixed-shape caches decode exactly like the growing ones, and the step compiles as one graph."""

from __future__ import annotations

import pytest
import torch

from seqformer.decoding.processors import MinLength
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.decoding.static import StaticDecoding, bucket_rows, bucket_width, fixed_shape
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def model(norm_first: bool = True, positional: str = "sinusoidal") -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=24, d_model=32, heads=4,
                                 layers=2, ffn_dim=64, dropout=0.1, max_len=40,
                                 norm_first=norm_first, positional=positional)).eval()


def sources() -> torch.Tensor:
    src = torch.randint(4, 20, (5, 7), generator=torch.Generator().manual_seed(1))
    src[1, 5:] = 0  # padded sources: the memory mask must reach the static step
    src[3, 2:] = 0
    return src


def same(a, b) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b, strict=True):
        assert x.log_prob == pytest.approx(y.log_prob, abs=1e-5)
        assert x.finished == y.finished


@pytest.mark.parametrize("norm_first, positional", [(True, "sinusoidal"), (False, "learned")])
def test_greedy_and_beam_equal_the_dynamic_cache(norm_first: bool, positional: str) -> None:
    m = model(norm_first, positional)
    static = StaticDecoding(m)
    src = sources()
    # Forced length, so every step runs and later positions are attended to.
    forced = [MinLength(12, m.eos_id)]
    same(greedy_search(static, src, 14, forced), greedy_search(m, src, 14, forced))
    ours = beam_search(static, src, beam=4, max_length=14, nbest=3, processors=forced)
    ref = beam_search(m, src, beam=4, max_length=14, nbest=3, processors=forced)
    for a, b in zip(ours, ref, strict=True):
        same(a, b)
    # Beam 1 expands to the same shape: select lands on the same pooled buffers.
    same([h[0] for h in beam_search(static, src, beam=1, max_length=14, processors=forced)],
         [h[0] for h in beam_search(m, src, beam=1, max_length=14, processors=forced)])
    # A second batch of the same shape reuses the pooled buffers (one graph on a GPU), and
    # stale keys of the first batch change nothing.
    buffers = len(static._pool)
    other = torch.flip(src, dims=[0])
    same(greedy_search(static, other, 14), greedy_search(m, other, 14))
    assert len(static._pool) == buffers


def test_the_step_compiles_without_graph_breaks() -> None:
    """fullgraph=True fails on any graph break: what CUDA graphs need to capture the step."""
    m = model()
    torch._dynamo.reset()
    static = StaticDecoding(m, compile=True, backend="eager")
    src = sources()
    same(greedy_search(static, src, 10), greedy_search(m, src, 10))


def test_batches_round_up_to_a_few_shapes() -> None:
    assert [bucket_width(n, 64) for n in (1, 8, 9, 17, 63)] == [8, 8, 16, 24, 64]
    assert bucket_width(30, 28) == 30 and bucket_width(27, 28) == 28  # never past the model
    assert [bucket_rows(n, 48) for n in (1, 2, 3, 5, 17, 33, 48)] == [1, 2, 4, 8, 32, 48, 48]
    assert bucket_rows(50, 48) == 50  # a batch over the budget's rows is not cut
    src = torch.tensor([[5, 6, 0], [7, 0, 0]])
    fixed = fixed_shape(src, 0, 8, 4)
    assert fixed.shape == (4, 8)
    assert fixed[:2, :3].equal(src) and not fixed[:, 3:].any()
    assert fixed[2:].equal(fixed[:1].expand(2, -1))  # filler rows: copies of the first
    assert fixed_shape(src, 0, 3, 2) is src
