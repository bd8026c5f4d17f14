"""Bahdanau and Luong attention: rows are distributions, padding gets nothing, and the scores
are the published formulas (checked against torch's SDPA and a direct computation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqformer.errors import ConfigError
from seqformer.nn.recurrent import AdditiveAttention, MultiplicativeAttention, make_attention

DIM = 8


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries (3, 4, DIM), memory (3, 5, DIM), a mask with 0, 2 and 4 padded positions."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(3, 4, DIM, generator=g)
    memory = torch.randn(3, 5, DIM, generator=g)
    lengths = torch.tensor([5, 3, 1])
    mask = torch.arange(5).unsqueeze(0) >= lengths.unsqueeze(1)
    return query, memory, mask


def modules() -> list:
    torch.manual_seed(0)
    return [make_attention("bahdanau", DIM, DIM), make_attention("luong", DIM, DIM, "general"),
            make_attention("luong", DIM, DIM, "dot")]


@pytest.mark.parametrize("index", range(3), ids=["bahdanau", "luong-general", "luong-dot"])
def test_rows_sum_to_one_and_padding_gets_zero_weight(index: int) -> None:
    attention = modules()[index]
    query, memory, mask = inputs()
    context, weights = attention(query, attention.prepare(memory), memory, mask)
    assert context.shape == (3, 4, DIM) and weights.shape == (3, 4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert bool((weights.masked_select(mask.unsqueeze(1).expand_as(weights)) == 0).all())
    assert bool((weights.masked_select(~mask.unsqueeze(1).expand_as(weights)) > 0).all())


@pytest.mark.parametrize("index", range(3), ids=["bahdanau", "luong-general", "luong-dot"])
def test_padding_does_not_change_the_context(index: int) -> None:
    """Row 1 has 3 real positions: attending over them alone must give the same context."""
    attention = modules()[index]
    query, memory, mask = inputs()
    context, weights = attention(query, attention.prepare(memory), memory, mask)
    alone = memory[1:2, :3]
    ctx1, w1 = attention(query[1:2], attention.prepare(alone), alone, None)
    torch.testing.assert_close(context[1:2], ctx1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights[1:2, :, :3], w1, atol=1e-6, rtol=1e-5)


def test_single_query_equals_a_one_row_batch() -> None:
    """Decoding passes (batch, dim) queries; training passes (batch, steps, dim)."""
    for attention in modules():
        query, memory, mask = inputs()
        keys = attention.prepare(memory)
        ctx_all, w_all = attention(query, keys, memory, mask)
        ctx_one, w_one = attention(query[:, 2], keys, memory, mask)
        torch.testing.assert_close(ctx_one, ctx_all[:, 2])
        torch.testing.assert_close(w_one, w_all[:, 2])


def test_luong_scores_match_torch_sdpa() -> None:
    """dot: softmax(q k^T) v is SDPA with scale 1; general: the same with keys W k."""
    query, memory, mask = inputs()
    torch.manual_seed(1)
    for score in ("dot", "general"):
        attention = MultiplicativeAttention(DIM, DIM, score)
        context, _ = attention(query, attention.prepare(memory), memory, mask)
        keys = memory if score == "dot" else memory @ attention.weight.weight.T
        reference = F.scaled_dot_product_attention(query, keys, memory,
                                                   attn_mask=~mask.unsqueeze(1), scale=1.0)
        torch.testing.assert_close(context, reference, atol=1e-5, rtol=1e-5)


def test_bahdanau_scores_are_v_tanh_of_the_projected_sum() -> None:
    torch.manual_seed(2)
    attention = AdditiveAttention(DIM, 6, 5)  # query, key and attention sizes may all differ
    query = torch.randn(2, 3, DIM)
    memory = torch.randn(2, 4, 6)
    _, weights = attention(query, attention.prepare(memory), memory)
    v = attention.v.weight[0]
    expected = torch.empty(2, 3, 4)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                hidden = attention.query.weight @ query[b, i] + attention.key(memory[b, j])
                expected[b, i, j] = v @ hidden.tanh()
    torch.testing.assert_close(weights, expected.softmax(-1), atol=1e-6, rtol=1e-5)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="dot needs equal"):
        MultiplicativeAttention(8, 6, "dot")
    with pytest.raises(ConfigError, match="model.score"):
        MultiplicativeAttention(8, 8, "concat")
    with pytest.raises(ConfigError, match="model.attention"):
        make_attention("multihead", 8, 8)
