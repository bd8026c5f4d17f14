"""Encoder/decoder layers against torch.nn.TransformerEncoderLayer / TransformerDecoderLayer."""

from __future__ import annotations

import pytest
import torch
from test_attention import copy_from_torch
from torch import nn

from seqformer.nn.layers import DecoderLayer, EncoderLayer, LayerCache
from seqformer.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

D, H, F = 16, 4, 32


def copy_common(ours, ref) -> None:
    with torch.no_grad():
        ours.ffn.linear1.load_state_dict(ref.linear1.state_dict())
        ours.ffn.linear2.load_state_dict(ref.linear2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=activation,
                                     batch_first=True, norm_first=norm_first).eval()
    ours = EncoderLayer(D, H, F, dropout=0.0, activation=activation, norm_first=norm_first).eval()
    for p in ref.parameters():  # random affine params so a swapped norm would show
        p.data.add_(torch.randn_like(p) * 0.1)
    copy_from_torch(ours.self_attn, ref.self_attn)
    copy_common(ours, ref)
    ours.attn_block.norm.load_state_dict(ref.norm1.state_dict())
    ours.ffn_block.norm.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(3, 7, D)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    expected = ref(x, src_key_padding_mask=pad)
    got, _ = ours(x, pad)
    keep = ~pad  # torch's fast path may zero padded rows; compare real positions
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)


def make_decoder_pair(norm_first: bool) -> tuple[DecoderLayer, nn.TransformerDecoderLayer]:
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(D, H, F, dropout=0.0, batch_first=True,
                                     norm_first=norm_first).eval()
    for p in ref.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    ours = DecoderLayer(D, H, F, dropout=0.0, norm_first=norm_first).eval()
    copy_from_torch(ours.self_attn, ref.self_attn)
    copy_from_torch(ours.cross_attn, ref.multihead_attn)
    copy_common(ours, ref)
    ours.self_block.norm.load_state_dict(ref.norm1.state_dict())
    ours.cross_block.norm.load_state_dict(ref.norm2.state_dict())
    ours.ffn_block.norm.load_state_dict(ref.norm3.state_dict())
    return ours, ref


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first: bool) -> None:
    ours, ref = make_decoder_pair(norm_first)
    x, mem = torch.randn(3, 6, D), torch.randn(3, 8, D)
    mem_pad = torch.zeros(3, 8, dtype=torch.bool)
    mem_pad[0, 6:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    expected = ref(x, mem, tgt_mask=causal, memory_key_padding_mask=mem_pad)
    got, (self_w, cross_w) = ours(x, mem, mem_pad)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert self_w is None and cross_w is None
    _, (self_w, cross_w) = ours(x, mem, mem_pad, need_weights=True)
    assert self_w.shape == (3, H, 6, 6) and cross_w.shape == (3, H, 6, 8)
    assert cross_w[0, :, :, 6:].abs().max() == 0


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_incremental_equals_full(norm_first: bool) -> None:
    ours, _ = make_decoder_pair(norm_first)
    x, mem = torch.randn(2, 5, D), torch.randn(2, 4, D)
    mem_pad = torch.tensor([[False] * 4, [False, False, True, True]])
    full, _ = ours(x, mem, mem_pad)
    cache = LayerCache()
    steps = [ours(x[:, t:t + 1], mem, mem_pad, cache)[0] for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_positional_encodings() -> None:
    sin = SinusoidalPositionalEncoding(8, 50)
    assert sin(10).shape == (10, 8)
    torch.testing.assert_close(sin(3, offset=4), sin(7)[4:])
    assert torch.allclose(sin(1)[0, 0::2], torch.zeros(4)) and torch.allclose(sin(1)[0, 1::2],
                                                                                torch.ones(4))
    learned = LearnedPositionalEmbedding(8, 50)
    torch.testing.assert_close(learned(2, offset=5), learned(7)[5:])


def test_causal_encoder_layer_with_cache_equals_full_pass() -> None:
    """The encoder block in causal mode is the GPT block: incremental equals full."""
    from seqformer.nn.attention import KVCache

    torch.manual_seed(0)
    layer = EncoderLayer(D, H, F, dropout=0.0).eval()
    x = torch.randn(2, 6, D)
    full, _ = layer(x, is_causal=True)
    cache = KVCache()
    steps = [layer(x[:, t:t + 1], is_causal=True, cache=cache)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    changed = x.clone()
    changed[:, 4] += 1.0
    later, _ = layer(changed, is_causal=True)
    torch.testing.assert_close(later[:, :4], full[:, :4])  # the future never leaks back
