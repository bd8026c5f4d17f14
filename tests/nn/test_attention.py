"""Our attention against torch.nn.MultiheadAttention, plus the invariants users rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqformer.nn.attention import KVCache, MultiHeadAttention


def copy_from_torch(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    d = ours.d_model
    w, b = ref.in_proj_weight.detach(), ref.in_proj_bias.detach()
    with torch.no_grad():
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(w[i * d:(i + 1) * d])
            proj.bias.copy_(b[i * d:(i + 1) * d])
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


def make_pair(d: int = 16, heads: int = 4) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(d, heads, batch_first=True).eval()
    ours = MultiHeadAttention(d, heads).eval()
    copy_from_torch(ours, ref)
    return ours, ref


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("masks", ["none", "padding", "causal", "both"])
def test_matches_torch_multihead_attention(need_weights: bool, masks: str) -> None:
    ours, ref = make_pair()
    q = torch.randn(3, 5, 16)
    kv = q if masks in ("causal", "both") else torch.randn(3, 7, 16)
    pad = None
    if masks in ("padding", "both"):
        pad = torch.zeros(3, kv.shape[1], dtype=torch.bool)
        pad[0, -2:] = True
        pad[2, -1:] = True
    causal = masks in ("causal", "both")
    attn_mask = nn.Transformer.generate_square_subsequent_mask(5).bool() if causal else None
    expected, _ = ref(q, kv, kv, key_padding_mask=pad, attn_mask=attn_mask)
    got, weights = ours(q, kv, kv, key_padding_mask=pad, is_causal=causal,
                        need_weights=need_weights)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5))
        if pad is not None:
            assert weights[0, :, :, -2:].abs().max() == 0
        if causal:
            future = torch.ones(5, 5, dtype=torch.bool).triu(1)
            assert weights[:, :, future].abs().max() == 0


def test_weight_path_equals_fast_path() -> None:
    ours, _ = make_pair()
    x = torch.randn(2, 6, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    fast, none = ours(x, key_padding_mask=pad)
    slow, weights = ours(x, key_padding_mask=pad, need_weights=True)
    assert none is None and weights.shape == (2, 4, 6, 6)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)


def test_incremental_cache_equals_full_causal() -> None:
    ours, _ = make_pair()
    x = torch.randn(2, 6, 16)
    full, _ = ours(x, is_causal=True)
    cache = KVCache()
    steps = [ours(x[:, t:t + 1], is_causal=True, cache=cache)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.key.shape == (2, 4, 6, 4)


def test_static_cache_projects_memory_once() -> None:
    ours, _ = make_pair()
    q, mem = torch.randn(2, 1, 16), torch.randn(2, 7, 16)
    cache = KVCache(static=True)
    first, _ = ours(q, mem, cache=cache)
    second, _ = ours(q, torch.zeros_like(mem), cache=cache)  # memory ignored once cached
    torch.testing.assert_close(first, second)
    kept = cache.select(torch.tensor([1, 1]))
    assert torch.equal(kept.key[0], kept.key[1])


def test_kv_cache_buffers_equal_concatenation_through_growth_and_selection() -> None:
    from seqformer.nn.attention import KVCache

    torch.manual_seed(0)
    cache, keys, values, batch = KVCache(), [], [], 3
    for step in range(40):  # crosses the initial capacity (16) and one doubling
        n = 1 if step else 5
        k, v = torch.randn(batch, 2, n, 4), torch.randn(batch, 2, n, 4)
        keys.append(k)
        values.append(v)
        got_k, got_v = cache.append(k, v)
        assert torch.equal(got_k, torch.cat(keys, 2)) and torch.equal(got_v, torch.cat(values, 2))
        if step == 20:
            idx = torch.tensor([2, 2, 0, 1])
            cache, batch = cache.select(idx), 4
            keys = [k.index_select(0, idx) for k in keys]
            values = [v.index_select(0, idx) for v in values]
            assert torch.equal(cache.key, torch.cat(keys, 2))
    assert cache._key_buf.shape[2] >= cache.key.shape[2] == 44
    static = KVCache(static=True)
    k = torch.randn(2, 2, 7, 4)
    assert static.append(k, k)[0] is k and static._key_buf is None
