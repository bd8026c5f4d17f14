"""Hugging Face ``DecisionTransformerModel`` -> seqformer ``DecisionTransformer``.

HF's model is GPT-2 blocks (its ``encoder``) fed with stacked (R, s, a) embeddings. Its GPT-2
still adds a position embedding, but with ``position_ids`` all zero: the same vector ``wpe[0]``
on every token, right after the embedding LayerNorm -- so it folds exactly into that
LayerNorm's bias. The blocks map with the GPT-2 mapping of ``hf_gpt2.py``; the state and
return heads (unused by the paper and by us) are dropped. Only continuous actions exist there.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError
from seqformer.interop.hf_gpt2 import ACTIVATIONS
from seqformer.interop.hf_gpt2 import state_from_hf as gpt2_state_from_hf
from seqformer.interop.hf_io import take
from seqformer.models.decision import DecisionTransformer, DecisionTransformerConfig
from seqformer.models.gpt import GPTConfig


def config_from_hf(hf: dict[str, Any], context: int = 20,
                   where: str = "config.json") -> DecisionTransformerConfig:
    """Our config for a ``DecisionTransformerConfig`` dict; ``context`` (K) is not part of
    HF's config (its model takes any length up to ``n_positions / 3``)."""
    activation = hf.get("activation_function", "relu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{where}: activation_function={activation!r} is not supported")
    if not hf.get("action_tanh", True):
        raise CheckpointError(f"{where}: action_tanh=false is not supported (our continuous "
                              "head is tanh)")
    d = int(hf.get("hidden_size", 128))
    return DecisionTransformerConfig(
        state_dim=int(hf.get("state_dim", 17)), act_dim=int(hf.get("act_dim", 4)),
        action="continuous", d_model=d, heads=int(hf.get("n_head", 1)),
        layers=int(hf.get("n_layer", 3)), ffn_dim=int(hf.get("n_inner") or 4 * d),
        context=context, max_ep_len=int(hf.get("max_ep_len", 4096)),
        dropout=float(hf.get("resid_pdrop", 0.1)),
        attention_dropout=float(hf.get("attn_pdrop", 0.1)),
        activation=ACTIVATIONS[activation], norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def state_from_hf(hf: dict[str, Tensor], config: DecisionTransformerConfig,
                  where: str = ".") -> dict[str, Tensor]:
    """DecisionTransformerModel tensors -> DecisionTransformer state dict."""
    hf = dict(hf)
    encoder = {k.removeprefix("encoder."): hf.pop(k) for k in list(hf)
               if k.startswith("encoder.")}
    if "wpe.weight" not in encoder:
        take(encoder, "encoder.wpe.weight", where)  # raises: not this architecture
    wpe0 = encoder["wpe.weight"][0]  # every token's position is 0 (see the module docstring)
    # The GPT-2 mapping consumes wte/wpe/ln_f/h.*; only the blocks and ln_f are kept.
    gpt = GPTConfig(vocab_size=5, d_model=config.d_model, heads=config.heads,
                    layers=config.layers, ffn_dim=config.ffn_dim, max_len=1)
    blocks = gpt2_state_from_hf(encoder, gpt, where)
    out = {k: v for k, v in blocks.items() if k.startswith(("layers.", "norm."))}
    for theirs, ours in (("embed_timestep", "time_embed"), ("embed_return", "return_embed"),
                         ("embed_state", "state_embed"), ("embed_action", "action_embed"),
                         ("predict_action.0", "action_head")):
        out[f"{ours}.weight"] = take(hf, f"{theirs}.weight", where)
        if theirs != "embed_timestep":
            out[f"{ours}.bias"] = take(hf, f"{theirs}.bias", where)
    out["embed_norm.weight"] = take(hf, "embed_ln.weight", where)
    out["embed_norm.bias"] = take(hf, "embed_ln.bias", where) + wpe0
    left = [k for k in hf if not k.startswith(("predict_state.", "predict_return."))]
    if left:
        raise CheckpointError(f"{where}: unexpected weights {left[:3]}; not a "
                              "DecisionTransformerModel")
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_model(hf_model, context: int = 20) -> DecisionTransformer:
    """A seqformer model with the weights of an in-memory ``DecisionTransformerModel``."""
    config = config_from_hf(hf_model.config.to_dict(), context)
    model = DecisionTransformer(config)
    model.load_state_dict(state_from_hf(hf_model.state_dict(), config))
    return model.eval()
