"""The Conformer block equals Hugging Face's Wav2Vec2ConformerEncoderLayer with copied weights,
with and without relative positions, and a padded batch gives each row what it gives alone."""

from __future__ import annotations

import pytest
import torch

from seqformer.nn.conformer import ConformerEncoder, ConformerLayer, relative_sinusoids

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2_conformer import (  # noqa: E402
    modeling_wav2vec2_conformer as hf,
)

D, HEADS, FFN, KERNEL = 32, 4, 64, 7


def hf_layer(relative: bool):
    config = transformers.Wav2Vec2ConformerConfig(
        hidden_size=D, num_attention_heads=HEADS, intermediate_size=FFN,
        conv_depthwise_kernel_size=KERNEL, hidden_act="swish",
        position_embeddings_type="relative" if relative else None, max_source_positions=64,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        conformer_conv_dropout=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    layer = hf.Wav2Vec2ConformerEncoderLayer(config)
    with torch.no_grad():  # non-trivial values everywhere the defaults are 0/1
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        bn = layer.conv_module.batch_norm
        bn.running_mean.normal_(0, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    positions = hf.Wav2Vec2ConformerRelPositionalEmbedding(config) if relative else None
    return layer.eval(), positions


def copy_weights(theirs, relative: bool) -> ConformerLayer:
    ours = ConformerLayer(D, HEADS, FFN, KERNEL, dropout=0.0, activation="silu",
                          relative=relative)
    conv = theirs.conv_module
    pairs = {
        "ffn1_norm": theirs.ffn1_layer_norm, "ffn2_norm": theirs.ffn2_layer_norm,
        "attn_norm": theirs.self_attn_layer_norm, "final_norm": theirs.final_layer_norm,
        "ffn1.linear1": theirs.ffn1.intermediate_dense, "ffn1.linear2": theirs.ffn1.output_dense,
        "ffn2.linear1": theirs.ffn2.intermediate_dense, "ffn2.linear2": theirs.ffn2.output_dense,
        "attn.q_proj": theirs.self_attn.linear_q, "attn.k_proj": theirs.self_attn.linear_k,
        "attn.v_proj": theirs.self_attn.linear_v, "attn.out_proj": theirs.self_attn.linear_out,
        "conv.norm": conv.layer_norm, "conv.pointwise1": conv.pointwise_conv1,
        "conv.depthwise": conv.depthwise_conv, "conv.batch_norm": conv.batch_norm,
        "conv.pointwise2": conv.pointwise_conv2,
    }
    if relative:
        pairs["attn.pos_proj"] = theirs.self_attn.linear_pos
    for name, module in pairs.items():
        ours.get_submodule(name).load_state_dict(module.state_dict())
    if relative:
        with torch.no_grad():
            ours.attn.pos_bias_u.copy_(theirs.self_attn.pos_bias_u)
            ours.attn.pos_bias_v.copy_(theirs.self_attn.pos_bias_v)
    return ours.eval()


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("time", [1, 9])
def test_layer_equals_hugging_face(relative: bool, time: int) -> None:
    theirs, positions = hf_layer(relative)
    ours = copy_weights(theirs, relative)
    x = torch.randn(3, time, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rel = positions(x) if relative else None
        expected = theirs(x, relative_position_embeddings=rel)
        got = ours(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_relative_sinusoids_match_the_reference_table() -> None:
    _, positions = hf_layer(True)
    x = torch.zeros(1, 11, D)
    assert torch.allclose(relative_sinusoids(11, D), positions(x)[0], atol=1e-6)


def test_padded_batch_gives_each_row_what_it_gives_alone() -> None:
    torch.manual_seed(0)
    encoder = ConformerEncoder(2, D, HEADS, FFN, KERNEL, dropout=0.0).eval()
    with torch.no_grad():
        for layer in encoder.layers:
            layer.conv.batch_norm.running_mean.normal_(0, 0.2)
    a, b = torch.randn(1, 10, D), torch.randn(1, 6, D)
    batch = torch.cat([a, torch.cat([b, torch.randn(1, 4, D)], 1)])
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 6:] = True
    with torch.no_grad():
        both = encoder(batch, mask)
        alone_a, alone_b = encoder(a), encoder(b)
    assert (both[0] - alone_a[0]).abs().max() < 1e-5
    assert (both[1, :6] - alone_b[0]).abs().max() < 1e-5


def test_conformer_trains() -> None:
    """Gradients reach every parameter (the position biases included)."""
    torch.manual_seed(0)
    encoder = ConformerEncoder(1, D, HEADS, FFN, KERNEL, dropout=0.1).train()
    encoder(torch.randn(2, 5, D)).pow(2).mean().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
