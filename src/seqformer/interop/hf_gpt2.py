"""GPT-2 (``GPT2LMHeadModel``) <-> seqformer GPT: config and state-dict mappings both ways.

A GPT-2 block is exactly our pre-LN ``EncoderLayer`` run causally, so the mapping is names and
layouts only: GPT-2 stores its projections as ``Conv1D`` (weight (in, out), the transpose of
``nn.Linear``) and packs q/k/v into one ``c_attn`` matrix, which is split (and packed again on
export). The activation ``gelu_new`` is our ``gelu_tanh``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_io import (
    load_checkpoint,
    save_hf_dir,
    take,
)
from seqformer.interop.hf_tokenizers import HFFileTokenizer, gpt2_tokenizer, write_hf_tokenizer
from seqformer.models.gpt import GPT, GPTConfig

# Hugging Face activation names -> ours, and back (the first HF name wins on export).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> GPTConfig:
    """Our GPTConfig for a GPT-2 ``config.json``; options we cannot express are refused."""
    for flag, value in (("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False),
                        ("scale_attn_weights", True)):
        if hf.get(flag, value) != value:
            raise CheckpointError(f"{where}: {flag}={hf[flag]} is not supported by seqformer's "
                                  "GPT; only standard GPT-2 attention can be imported")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{where}: activation_function={activation!r} is not supported; "
                              f"supported: {', '.join(ACTIVATIONS)}")
    d = int(hf.get("n_embd", 768))
    eos = hf.get("eos_token_id", 50256)
    eos = int(eos[0] if isinstance(eos, list) else eos)
    bos = hf.get("bos_token_id")
    pad = hf.get("pad_token_id")
    return GPTConfig(
        vocab_size=int(hf.get("vocab_size", 50257)), d_model=d, heads=int(hf.get("n_head", 12)),
        layers=int(hf.get("n_layer", 12)), ffn_dim=int(hf.get("n_inner") or 4 * d),
        dropout=float(hf.get("resid_pdrop", 0.1)), attention_dropout=float(hf.get("attn_pdrop",
                                                                                  0.1)),
        activation=ACTIVATIONS[activation], norm_first=True, positional="learned",
        max_len=int(hf.get("n_positions", 1024)),
        tie_output=bool(hf.get("tie_word_embeddings", True)),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        # GPT-2 has no padding token; its one special token <|endoftext|> stands in for all.
        pad_id=int(eos if pad is None else pad), bos_id=int(eos if bos is None else bos),
        eos_id=eos)


def config_to_hf(c: GPTConfig) -> dict[str, Any]:
    """A GPT-2 ``config.json`` for our config; refuses what GPT-2 cannot express."""
    problems = []
    if c.positional != "learned":
        problems.append(f"positional={c.positional!r} (GPT-2 has learned positions)")
    if not c.norm_first:
        problems.append("norm_first=false (GPT-2 is pre-LN)")
    if c.activation not in EXPORT_ACTIVATIONS:
        problems.append(f"activation={c.activation!r}")
    if problems:
        raise ConfigError(f"cannot export this GPT as GPT-2: {'; '.join(problems)}")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.max_len, "n_embd": c.d_model,
        "n_layer": c.layers, "n_head": c.heads, "n_inner": c.ffn_dim,
        "activation_function": EXPORT_ACTIVATIONS[c.activation], "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
        "layer_norm_epsilon": c.norm_eps, "tie_word_embeddings": c.tie_output,
        "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "pad_token_id": None if c.pad_id == c.eos_id else c.pad_id,
    }


def state_from_hf(hf: dict[str, Tensor], config: GPTConfig, where: str = ".") -> dict[str, Tensor]:
    """GPT2LMHeadModel tensors -> GPT state dict (``transformer.`` prefix optional)."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    d = config.d_model
    out = {"embed.weight": take(hf, "wte.weight", where),
           "pos.embedding.weight": take(hf, "wpe.weight", where),
           "norm.weight": take(hf, "ln_f.weight", where), "norm.bias": take(hf, "ln_f.bias", where)}
    for i in range(config.layers):
        h, o = f"h.{i}.", f"layers.{i}."
        qkv_w = take(hf, h + "attn.c_attn.weight", where).t()  # Conv1D (in, 3d) -> (3d, in)
        qkv_b = take(hf, h + "attn.c_attn.bias", where)
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[o + f"self_attn.{name}.weight"] = qkv_w[j * d:(j + 1) * d]
            out[o + f"self_attn.{name}.bias"] = qkv_b[j * d:(j + 1) * d]
        pairs = (("attn.c_proj", "self_attn.out_proj"), ("mlp.c_fc", "ffn.linear1"),
                 ("mlp.c_proj", "ffn.linear2"))
        for theirs, ours in pairs:
            out[o + ours + ".weight"] = take(hf, h + theirs + ".weight", where).t()
            out[o + ours + ".bias"] = take(hf, h + theirs + ".bias", where)
        for theirs, ours in (("ln_1", "attn_block.norm"), ("ln_2", "ffn_block.norm")):
            out[o + ours + ".weight"] = take(hf, h + theirs + ".weight", where)
            out[o + ours + ".bias"] = take(hf, h + theirs + ".bias", where)
    head = hf.pop("lm_head.weight", None)
    if config.tie_output:
        out["head.weight"] = out["embed.weight"]
    elif head is None:
        raise CheckpointError(f"{where}: lm_head.weight missing and tie_word_embeddings is false")
    else:
        out["head.weight"] = head
    # Old checkpoints carry the causal-mask buffers; anything else left over is unexpected.
    left = [k for k in hf if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if left:
        raise CheckpointError(f"{where}: unexpected weights {left[:3]}; not a GPT-2 LM head model")
    return {k: v.contiguous() for k, v in out.items()}


def state_to_hf(model: GPT) -> dict[str, Tensor]:
    """GPT -> GPT2LMHeadModel tensors (tied head left out, as ``save_pretrained`` does)."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    out = {"transformer.wte.weight": s["embed.weight"],
           "transformer.wpe.weight": s["pos.embedding.weight"],
           "transformer.ln_f.weight": s["norm.weight"], "transformer.ln_f.bias": s["norm.bias"]}
    for i in range(c.layers):
        h, o = f"transformer.h.{i}.", f"layers.{i}."
        out[h + "attn.c_attn.weight"] = torch.cat(
            [s[o + f"self_attn.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj")]).t()
        out[h + "attn.c_attn.bias"] = torch.cat(
            [s[o + f"self_attn.{n}.bias"] for n in ("q_proj", "k_proj", "v_proj")])
        pairs = (("attn.c_proj", "self_attn.out_proj"), ("mlp.c_fc", "ffn.linear1"),
                 ("mlp.c_proj", "ffn.linear2"))
        for theirs, ours in pairs:
            out[h + theirs + ".weight"] = s[o + ours + ".weight"].t()
            out[h + theirs + ".bias"] = s[o + ours + ".bias"]
        for theirs, ours in (("ln_1", "attn_block.norm"), ("ln_2", "ffn_block.norm")):
            out[h + theirs + ".weight"] = s[o + ours + ".weight"]
            out[h + theirs + ".bias"] = s[o + ours + ".bias"]
    if not c.tie_output:
        out["lm_head.weight"] = s["head.weight"]
    return out


def special_ids(config: GPTConfig) -> dict[str, int]:
    """GPT-2's tokenizer calls <|endoftext|> its unk token too (byte-level BPE never needs one)."""
    return {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id,
            "unk": config.eos_id}


def load_tokenizer(directory: str | Path, config: GPTConfig) -> HFFileTokenizer | None:
    """The checkpoint's byte-level BPE as a seqformer tokenizer (None if it has none)."""
    return gpt2_tokenizer(directory, special_ids(config))


def load(directory: str | Path, trust_pickle: bool = False) -> GPT:
    """A GPT with the weights of the GPT-2 checkpoint in ``directory`` (eval mode, CPU)."""
    return load_checkpoint(directory, "gpt2", GPT, config_from_hf, state_from_hf, trust_pickle)


def save(model: GPT, directory: str | Path, tokenizer: HFFileTokenizer | None = None) -> None:
    """Write ``model`` as a GPT-2 directory ``GPT2LMHeadModel.from_pretrained`` can read, with
    the tokenizer (``tokenizer.json``) that ``GPT2TokenizerFast.from_pretrained`` can read."""
    save_hf_dir(directory, config_to_hf(model.config), state_to_hf(model))
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, directory, "GPT2Tokenizer")
