"""Hugging Face ``DecisionTransformerModel`` <-> seqformer ``DecisionTransformer``.

HF's model is GPT-2 blocks (its ``encoder``) fed with stacked (R, s, a) embeddings. Its GPT-2
still adds a position embedding, but with ``position_ids`` all zero: the same vector ``wpe[0]``
on every token, right after the embedding LayerNorm -- so it folds exactly into that
LayerNorm's bias. The blocks map with the GPT-2 mapping of ``hf_gpt2.py``; the state and
return heads (unused by the paper and by us) are dropped. Only continuous actions exist there.

Export (:func:`export_dir`) writes the inverse: ``wpe`` (and GPT-2's unused ``wte``) as zeros,
so ``embed_ln``'s bias is ours unchanged, and zero state / return heads (we train none). What
HF's config has no field for goes into a ``seqformer`` entry of ``config.json`` (transformers
keeps unknown config keys): ``context`` (K), ``return_scale`` and ``action``. As in HF's own
Decision Transformer examples, the caller scales returns-to-go: pass ``R / return_scale`` to
the HF model (folding the scale into ``embed_return`` would make the round trip inexact). A
``discrete`` model is exported with ``action_tanh: false``: pass actions one-hot (zeros at
padded steps), and ``action_preds`` are its logits. Timesteps must be below ``max_ep_len``
(we clamp them; HF's embedding refuses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_gpt2 import ACTIVATIONS, EXPORT_ACTIVATIONS
from seqformer.interop.hf_gpt2 import state_from_hf as gpt2_state_from_hf
from seqformer.interop.hf_gpt2 import state_to_hf as gpt2_state_to_hf
from seqformer.interop.hf_io import load_checkpoint, save_hf_dir, take
from seqformer.models.decision import DecisionTransformer, DecisionTransformerConfig
from seqformer.models.gpt import GPT, GPTConfig


def config_from_hf(hf: dict[str, Any], context: int | None = None,
                   where: str = "config.json") -> DecisionTransformerConfig:
    """Our config for a ``DecisionTransformerConfig`` dict. ``context`` (K), ``return_scale``
    and ``action`` are not part of HF's config (its model takes any length up to
    ``n_positions / 3``): they come from the ``seqformer`` entry our export writes, else
    ``context`` (default 20), 1.0 and continuous."""
    ours = hf.get("seqformer") or {}
    activation = hf.get("activation_function", "relu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{where}: activation_function={activation!r} is not supported")
    action = ours.get("action", "continuous")
    if action == "continuous" and not hf.get("action_tanh", True):
        raise CheckpointError(f"{where}: action_tanh=false is not supported (our continuous "
                              "head is tanh)")
    d = int(hf.get("hidden_size", 128))
    return DecisionTransformerConfig(
        state_dim=int(hf.get("state_dim", 17)), act_dim=int(hf.get("act_dim", 4)),
        action=action, d_model=d, heads=int(hf.get("n_head", 1)),
        layers=int(hf.get("n_layer", 3)), ffn_dim=int(hf.get("n_inner") or 4 * d),
        context=int(context or ours.get("context", 20)),
        max_ep_len=int(hf.get("max_ep_len", 4096)),
        dropout=float(hf.get("resid_pdrop", 0.1)),
        attention_dropout=float(hf.get("attn_pdrop", 0.1)),
        activation=ACTIVATIONS[activation], norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        return_scale=float(ours.get("return_scale", 1.0)))


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


def from_hf_model(hf_model, context: int | None = None) -> DecisionTransformer:
    """A seqformer model with the weights of an in-memory ``DecisionTransformerModel``."""
    config = config_from_hf(hf_model.config.to_dict(), context)
    model = DecisionTransformer(config)
    model.load_state_dict(state_from_hf(hf_model.state_dict(), config))
    return model.eval()


def load(directory: str | Path, context: int | None = None,
         trust_pickle: bool = False) -> DecisionTransformer:
    """The ``DecisionTransformerModel`` in the local directory ``directory`` (eval mode)."""
    def config(hf: dict[str, Any], where: str) -> DecisionTransformerConfig:
        return config_from_hf(hf, context, where)

    return load_checkpoint(directory, "decision_transformer", DecisionTransformer, config,
                           state_from_hf, trust_pickle)


# -- export: seqformer DecisionTransformer -> DecisionTransformerModel ---------------------------

def config_to_hf(c: DecisionTransformerConfig) -> dict[str, Any]:
    """A ``DecisionTransformerModel`` ``config.json`` for ``c`` (see the module docstring for
    the ``seqformer`` entry)."""
    if c.activation not in EXPORT_ACTIVATIONS:
        raise ConfigError(f"model.activation={c.activation!r} has no GPT-2 counterpart; "
                              f"exportable: {', '.join(EXPORT_ACTIVATIONS)}")
    return {
        "architectures": ["DecisionTransformerModel"], "model_type": "decision_transformer",
        "state_dim": c.state_dim, "act_dim": c.act_dim, "hidden_size": c.d_model,
        "max_ep_len": c.max_ep_len, "action_tanh": c.action == "continuous", "vocab_size": 1,
        "n_positions": 3 * c.context, "n_layer": c.layers, "n_head": c.heads,
        "n_inner": c.ffn_dim, "activation_function": EXPORT_ACTIVATIONS[c.activation],
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
        "layer_norm_epsilon": c.norm_eps, "bos_token_id": None, "eos_token_id": None,
        "seqformer": {"context": c.context, "return_scale": c.return_scale,
                      "action": c.action},
    }


def state_to_hf(model: DecisionTransformer) -> dict[str, Tensor]:
    """Our weights under ``DecisionTransformerModel`` names (the inverse of
    :func:`state_from_hf` with a zero ``wpe``). The blocks go through the GPT-2 export mapping
    of a GPT shell holding them, so the Conv1D transposes and q/k/v packing live in one place."""
    c = model.config
    s = {k: v.detach() for k, v in model.state_dict().items()}
    shell = GPT(GPTConfig(vocab_size=5, d_model=c.d_model, heads=c.heads, layers=c.layers,
                          ffn_dim=c.ffn_dim, max_len=3 * c.context, activation=c.activation,
                          norm_eps=c.norm_eps))
    missing, unexpected = shell.load_state_dict(
        {k: v for k, v in s.items() if k.startswith(("layers.", "norm."))}, strict=False)
    if unexpected or not set(missing) <= {"embed.weight", "pos.embedding.weight",
                                          "head.weight"}:
        raise RuntimeError(f"GPT shell does not fit: missing {missing}, unexpected {unexpected}")
    out = {"encoder." + k.removeprefix("transformer."): v
           for k, v in gpt2_state_to_hf(shell).items()}
    out["encoder.wte.weight"] = torch.zeros(1, c.d_model)  # unused: tokens come as embeddings
    out["encoder.wpe.weight"] = torch.zeros(3 * c.context, c.d_model)  # see module docstring
    for theirs, ours in (("embed_timestep", "time_embed"), ("embed_return", "return_embed"),
                         ("embed_state", "state_embed"), ("embed_action", "action_embed"),
                         ("predict_action.0", "action_head"), ("embed_ln", "embed_norm")):
        out[f"{theirs}.weight"] = s[f"{ours}.weight"]
        if theirs != "embed_timestep":
            out[f"{theirs}.bias"] = s[f"{ours}.bias"]
    for head, width in (("predict_state", c.state_dim), ("predict_return", 1)):
        out[f"{head}.weight"] = torch.zeros(width, c.d_model)
        out[f"{head}.bias"] = torch.zeros(width)
    return out


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF ``DecisionTransformerModel`` directory ``src`` as a seqformer model
    directory ``out`` (``config.json`` with ``family: decision`` and the weights). K,
    ``return_scale`` and the action kind come from the ``seqformer`` entry our export writes,
    else 20, 1.0 and continuous (HF's only kind). The result is for the Python API
    (``DecisionTransformer.load(out).predict``); ``seqformer evaluate`` rolls out only in the
    gridworld of a ``task: decision`` run (its ``recipe.yaml``), with that world's state and
    action sizes."""
    model = load(src, trust_pickle=trust_pickle)
    model.save(out)
    return "decision"


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the Decision Transformer run ``model_dir`` as a Hugging Face directory ``out``
    (``config.json`` + ``model.safetensors``) for ``DecisionTransformerModel.from_pretrained``;
    returns the model_type written."""
    model = DecisionTransformer.load(model_dir)
    save_hf_dir(out, config_to_hf(model.config), state_to_hf(model))
    return "decision_transformer"
