"""Rotary position embeddings: parity with transformers' Llama RoPE, relativity, cache offsets."""

from __future__ import annotations

import pytest
import torch

from seqformer.nn.attention import KVCache, MultiHeadAttention
from seqformer.nn.positional import RotaryEmbedding

transformers = pytest.importorskip("transformers")


def llama_config(dim: int = 32, heads: int = 4, base: float = 10000.0):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=dim, num_attention_heads=heads, num_key_value_heads=heads,
                       intermediate_size=64, num_hidden_layers=1, vocab_size=16,
                       max_position_embeddings=64, attention_bias=True,
                       rope_parameters={"rope_type": "default", "rope_theta": base})


@pytest.mark.parametrize("base", [10000.0, 500.0])
@pytest.mark.parametrize("offset", [0, 7])
def test_rotation_equals_llama_apply_rotary_pos_emb(base: float, offset: int) -> None:
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    ref = LlamaRotaryEmbedding(llama_config(32, 4, base))
    positions = torch.arange(offset, offset + 9).unsqueeze(0).expand(2, -1)
    cos, sin = ref(q, positions)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    q_ours, k_ours = RotaryEmbedding(8, base)(q, k, offset)
    torch.testing.assert_close(q_ours, q_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(k_ours, k_ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(q_ours, q)  # the rotation did something


def test_attention_with_rotary_equals_llama_attention() -> None:
    """The whole attention sub-layer (projections, rotation after the head split, causal mask,
    output projection) against LlamaAttention with biases and as many kv heads as heads."""
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = llama_config()
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = LlamaAttention(config, layer_idx=0).eval()
    ours = MultiHeadAttention(32, 4, rotary=RotaryEmbedding(8)).eval()
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(ours, name).load_state_dict(getattr(ref, name).state_dict())
        ours.out_proj.weight.copy_(ref.o_proj.weight)
        ours.out_proj.bias.copy_(ref.o_proj.bias)  # Llama's o_proj has a bias when asked
    x = torch.randn(2, 6, 32)
    positions = torch.arange(6).unsqueeze(0).expand(2, -1)
    cos_sin = LlamaRotaryEmbedding(config)(x, positions)
    causal = torch.full((6, 6), float("-inf")).triu(1).view(1, 1, 6, 6).expand(2, 1, 6, 6)
    expected, _ = ref(x, position_embeddings=cos_sin, attention_mask=causal)
    got, _ = ours(x, is_causal=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scores_depend_only_on_position_differences() -> None:
    torch.manual_seed(1)
    rotary = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> torch.Tensor:
        qm, _ = rotary(q, q, m)
        _, kn = rotary(k, k, n)
        return (qm * kn).sum()

    for shift in (1, 5, 40):
        torch.testing.assert_close(score(3, 1), score(3 + shift, 1 + shift), atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(score(2, 9), score(2 + shift, 9 + shift), atol=1e-5,
                                   rtol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2))  # ... and do depend on the difference


def test_cached_attention_rotates_each_step_at_its_own_position() -> None:
    torch.manual_seed(2)
    attn = MultiHeadAttention(16, 2, rotary=RotaryEmbedding(8)).eval()
    x = torch.randn(2, 7, 16)
    full, _ = attn(x, is_causal=True)
    cache = KVCache()
    prefix, _ = attn(x[:, :3], is_causal=True, cache=cache)
    steps = [prefix] + [attn(x[:, t:t + 1], is_causal=True, cache=cache)[0] for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_odd_head_size_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
