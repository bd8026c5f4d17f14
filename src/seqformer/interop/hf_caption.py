"""Hugging Face ``VisionEncoderDecoderModel`` (a ``ViTModel`` encoder + a ``GPT2LMHeadModel``
decoder with ``add_cross_attention``) <-> seqformer :class:`~seqformer.models.captioner.
Captioner`, both ways (import: :func:`import_caption`; export: :func:`export_caption`).

The layouts match one to one, which is why GPT-2 (not BERT) is the decoder: a GPT-2 block
with cross-attention is exactly our pre-LN ``DecoderLayer`` -- ``ln_1`` + causal self-attention,
``ln_cross_attn`` + cross-attention (``q_attn`` on the decoder states, ``c_attn`` giving keys and
values of the encoder states), ``ln_2`` + MLP -- with ``ln_f`` as the decoder's final norm,
learned positions, unscaled embeddings and an LM head tied to ``wte``. GPT-2 keeps projections
as ``Conv1D`` (weight (in, out): the transpose of ``nn.Linear``) and packs q/k/v (self) and
k/v (cross) into one matrix each; they are split on import and packed on export. The encoder
is the ViT's layout (``interop/hf_vit.py``'s renaming, under ``encoder.`` instead of ``vit.``).

Refused, rather than approximated: an encoder width other than the decoder's (HF then adds an
``enc_to_dec_proj``), different head counts, a decoder LayerNorm eps other than 1e-5 (our
decoder's), and GPT-2 options our attention does not have. ViT's pooler is unused by
captioning: ignored on import, written as zeros on export so ``from_pretrained`` reports no
missing weight. The decoder start id (``decoder_start_token_id``) is our ``bos_id``. A
checkpoint's GPT-2 tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``) is
imported into ``tokenizer/``; seqformer's word tokenizer is not exported (map ids to text with
the run's ``tokenizer/``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop import hf_gpt2, hf_vit
from seqformer.interop.hf_io import save_hf_dir, take
from seqformer.models.captioner import Captioner, CaptionerConfig
from seqformer.models.gpt import GPTConfig

MODEL_TYPE = "vision-encoder-decoder"
# Encoder names as hf_vit reads them, with ViTModel's own prefix (``encoder.`` in the pair).
_ENC_FIXED = {
    "encoder.embeddings.cls_token": "cls_token",
    "encoder.embeddings.patch_embeddings.projection.weight": "patch_embed.projection.weight",
    "encoder.embeddings.patch_embeddings.projection.bias": "patch_embed.projection.bias",
    "encoder.layernorm.weight": "encoder.norm.weight",
    "encoder.layernorm.bias": "encoder.norm.bias",
}
_ENC_LAYER = re.compile(r"^encoder\.(?:layers|encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$")
_ENC_POSITIONS = "encoder.embeddings.position_embeddings"
_POOLER = ("encoder.pooler.dense.weight", "encoder.pooler.dense.bias")
_DEC = "decoder.transformer."
# (GPT-2 name inside block N, ours inside decoder.layers.N) for the plain Conv1D / LayerNorm
# tensors; the packed c_attn matrices are handled apart.
_CONV1D = (("attn.c_proj", "self_attn.out_proj"), ("crossattention.q_attn", "cross_attn.q_proj"),
           ("crossattention.c_proj", "cross_attn.out_proj"), ("mlp.c_fc", "ffn.linear1"),
           ("mlp.c_proj", "ffn.linear2"))
_NORMS = (("ln_1", "self_block.norm"), ("ln_cross_attn", "cross_block.norm"),
          ("ln_2", "ffn_block.norm"))


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> CaptionerConfig:
    """Our config for a ``vision-encoder-decoder`` ``config.json`` (ViT + GPT-2); what our
    blocks cannot express is a CheckpointError naming the field."""
    enc, dec = hf.get("encoder") or {}, hf.get("decoder") or {}
    if enc.get("model_type") != "vit" or dec.get("model_type") != "gpt2":
        raise CheckpointError(f"{where}: encoder {enc.get('model_type')!r} + decoder "
                              f"{dec.get('model_type')!r}; only a vit encoder with a gpt2 "
                              "decoder maps onto seqformer's captioner")
    if not dec.get("add_cross_attention", False):
        raise CheckpointError(f"{where}: the gpt2 decoder has add_cross_attention=false")
    vit = hf_vit.config_from_hf({**enc, "num_labels": 2}, where)
    # hf_gpt2 checks every other GPT-2 option; cross-attention is ours to map.
    gpt = hf_gpt2.config_from_hf({**dec, "add_cross_attention": False}, where)
    if dec.get("cross_attention_hidden_size") not in (None, gpt.d_model) or \
            vit.d_model != gpt.d_model:
        raise CheckpointError(f"{where}: encoder width {vit.d_model} differs from decoder "
                              f"width {gpt.d_model} (HF adds enc_to_dec_proj); not supported")
    if vit.heads != gpt.heads:
        raise CheckpointError(f"{where}: encoder heads {vit.heads} differ from decoder heads "
                              f"{gpt.heads}; seqformer's captioner has one model.heads")
    if abs(gpt.norm_eps - 1e-5) > 1e-12:
        raise CheckpointError(f"{where}: decoder layer_norm_epsilon={gpt.norm_eps}; "
                              "seqformer's decoder uses 1e-5")
    if not gpt.tie_output:
        raise CheckpointError(f"{where}: untied decoder lm_head; seqformer's captioner ties it "
                              "to the token embedding")
    eos = hf.get("eos_token_id", dec.get("eos_token_id"))
    bos = hf.get("decoder_start_token_id", dec.get("decoder_start_token_id"))
    bos = dec.get("bos_token_id", eos) if bos is None else bos
    pad = hf.get("pad_token_id", dec.get("pad_token_id"))
    eos = gpt.eos_id if eos is None else int(_first(eos))
    return CaptionerConfig(
        vocab_size=gpt.vocab_size, image_size=vit.image_size, patch_size=vit.patch_size,
        channels=vit.channels, d_model=gpt.d_model, heads=gpt.heads,
        encoder_layers=vit.layers, decoder_layers=gpt.layers, ffn_dim=vit.ffn_dim,
        decoder_ffn_dim=gpt.ffn_dim, max_target_positions=gpt.max_len,
        dropout=gpt.dropout, attention_dropout=gpt.attention_dropout,
        activation=vit.activation, decoder_activation=gpt.activation,
        layer_norm_eps=vit.layer_norm_eps, pad_id=int(eos if pad is None else _first(pad)),
        bos_id=int(_first(bos)), eos_id=eos)


def state_from_hf(hf: dict[str, Tensor], config: CaptionerConfig, where: str = "."
                  ) -> dict[str, Tensor]:
    """VisionEncoderDecoderModel tensors -> Captioner state dict."""
    hf = dict(hf)
    for name in _POOLER:
        hf.pop(name, None)
    if "enc_to_dec_proj.weight" in hf:
        raise CheckpointError(f"{where}: enc_to_dec_proj present; encoder and decoder widths "
                              "must match")
    encoder = {k: hf.pop(k) for k in list(hf) if k.startswith("encoder.")}
    out = hf_vit.rename_from_hf(encoder, _ENC_FIXED, _ENC_LAYER, _ENC_POSITIONS, "ViT",
                                "a ViTModel encoder", where)
    d = config.d_model
    out["embed_tokens.weight"] = take(hf, _DEC + "wte.weight", where)
    out["decoder_positions.embedding.weight"] = take(hf, _DEC + "wpe.weight", where)
    out["decoder.norm.weight"] = take(hf, _DEC + "ln_f.weight", where)
    out["decoder.norm.bias"] = take(hf, _DEC + "ln_f.bias", where)
    for i in range(config.decoder_layers):
        h, o = f"{_DEC}h.{i}.", f"decoder.layers.{i}."
        packed = (("attn.c_attn", "self_attn", ("q_proj", "k_proj", "v_proj")),
                  ("crossattention.c_attn", "cross_attn", ("k_proj", "v_proj")))
        for theirs, module, names in packed:
            weight = take(hf, h + theirs + ".weight", where).t()  # (in, n*d) -> (n*d, in)
            bias = take(hf, h + theirs + ".bias", where)
            for j, name in enumerate(names):
                out[o + f"{module}.{name}.weight"] = weight[j * d:(j + 1) * d]
                out[o + f"{module}.{name}.bias"] = bias[j * d:(j + 1) * d]
        for theirs, ours in _CONV1D:
            out[o + ours + ".weight"] = take(hf, h + theirs + ".weight", where).t()
            out[o + ours + ".bias"] = take(hf, h + theirs + ".bias", where)
        for theirs, ours in _NORMS:
            out[o + ours + ".weight"] = take(hf, h + theirs + ".weight", where)
            out[o + ours + ".bias"] = take(hf, h + theirs + ".bias", where)
    head = hf.pop("decoder.lm_head.weight", None)
    if head is not None and not torch.equal(head, out["embed_tokens.weight"]):
        raise CheckpointError(f"{where}: decoder.lm_head.weight differs from wte; seqformer's "
                              "captioner ties them")
    out["output.weight"] = out["embed_tokens.weight"]
    left = [k for k in hf if not k.endswith((".attn.bias", ".attn.masked_bias",
                                             ".crossattention.bias",
                                             ".crossattention.masked_bias"))]
    if left:
        raise CheckpointError(f"{where}: unexpected weights {left[:3]}; not a ViT + GPT-2 "
                              "VisionEncoderDecoderModel")
    return {k: v.contiguous() for k, v in out.items()}


def load(directory: str | Path, trust_pickle: bool = False) -> Captioner:
    """The VisionEncoderDecoderModel in ``directory`` as a Captioner (eval mode, CPU)."""
    from seqformer.interop.hf_io import load_checkpoint

    return load_checkpoint(directory, MODEL_TYPE, Captioner, config_from_hf, state_from_hf,
                           trust_pickle)


def import_caption(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF directory ``src`` as a seqformer model directory ``out``: config.json with
    ``family: captioner`` and ``preprocess`` (from ``preprocessor_config.json``), the weights,
    and ``tokenizer/`` when the checkpoint has a GPT-2 tokenizer. Returns the model_type."""
    from seqformer.interop.hf_tokenizers import gpt2_tokenizer

    model = load(src, trust_pickle)
    c = model.config
    model.save(out, hf_vit.preprocess_from_hf(src, c.channels))
    tokenizer = gpt2_tokenizer(src, {"pad": c.pad_id, "bos": c.bos_id, "eos": c.eos_id,
                                     "unk": c.eos_id})
    if tokenizer is not None:
        tokenizer.save(Path(out) / "tokenizer")
    return MODEL_TYPE


# -- export ---------------------------------------------------------------------------------------

def _gpt_config(c: CaptionerConfig) -> GPTConfig:
    """The decoder's shape as seqformer's GPT config, so hf_gpt2 writes (and checks) the GPT-2
    half of the config."""
    return GPTConfig(vocab_size=c.vocab_size, d_model=c.d_model, heads=c.heads,
                     layers=c.decoder_layers, ffn_dim=c.decoder_ffn, dropout=c.dropout,
                     attention_dropout=c.attention_dropout, activation=c.decoder_activation,
                     norm_first=True, positional="learned", max_len=c.max_target_positions,
                     tie_output=True, norm_eps=1e-5, pad_id=c.pad_id, bos_id=c.bos_id,
                     eos_id=c.eos_id)


def config_to_hf(model: Captioner) -> dict[str, Any]:
    """A ``vision-encoder-decoder`` ``config.json`` for ``model``."""
    c = model.config
    if c.activation != "gelu":
        raise ConfigError(f"model.activation={c.activation!r}: a Hugging Face ViT encoder "
                          "needs exact 'gelu'")
    decoder = hf_gpt2.config_to_hf(_gpt_config(c))
    decoder.pop("architectures", None)
    decoder.update({"add_cross_attention": True, "is_decoder": True,
                    "decoder_start_token_id": c.bos_id, "pad_token_id": c.pad_id})
    encoder = {
        "model_type": "vit", "image_size": c.image_size, "patch_size": c.patch_size,
        "num_channels": c.channels, "hidden_size": c.d_model,
        "num_hidden_layers": c.encoder_layers, "num_attention_heads": c.heads,
        "intermediate_size": c.ffn_dim, "hidden_act": "gelu",
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
        "layer_norm_eps": c.layer_norm_eps, "qkv_bias": True,
    }
    return {"architectures": ["VisionEncoderDecoderModel"], "model_type": MODEL_TYPE,
            "is_encoder_decoder": True, "tie_word_embeddings": False,
            "decoder_start_token_id": c.bos_id, "eos_token_id": c.eos_id,
            "pad_token_id": c.pad_id, "encoder": encoder, "decoder": decoder}


def state_to_hf(model: Captioner) -> dict[str, Tensor]:
    """Our state dict under VisionEncoderDecoderModel names (the inverse of
    :func:`state_from_hf`; the tied lm_head left out, as ``save_pretrained`` does)."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    encoder_names = {"cls_token", "position.embedding.weight"} | {
        k for k in s if k.startswith(("patch_embed.", "encoder."))}
    out = hf_vit.rename_to_hf({k: s[k] for k in encoder_names}, _ENC_FIXED, _ENC_POSITIONS,
                              "encoder.encoder.layer", "Captioner encoder")
    out[_POOLER[0]] = torch.zeros(c.d_model, c.d_model)
    out[_POOLER[1]] = torch.zeros(c.d_model)
    out[_DEC + "wte.weight"] = s["embed_tokens.weight"]
    out[_DEC + "wpe.weight"] = s["decoder_positions.embedding.weight"]
    out[_DEC + "ln_f.weight"] = s["decoder.norm.weight"]
    out[_DEC + "ln_f.bias"] = s["decoder.norm.bias"]
    for i in range(c.decoder_layers):
        h, o = f"{_DEC}h.{i}.", f"decoder.layers.{i}."
        packed = (("attn.c_attn", "self_attn", ("q_proj", "k_proj", "v_proj")),
                  ("crossattention.c_attn", "cross_attn", ("k_proj", "v_proj")))
        for theirs, module, names in packed:
            out[h + theirs + ".weight"] = torch.cat(
                [s[o + f"{module}.{n}.weight"] for n in names]).t()
            out[h + theirs + ".bias"] = torch.cat([s[o + f"{module}.{n}.bias"] for n in names])
        for theirs, ours in _CONV1D:
            out[h + theirs + ".weight"] = s[o + ours + ".weight"].t()
            out[h + theirs + ".bias"] = s[o + ours + ".bias"]
        for theirs, ours in _NORMS:
            out[h + theirs + ".weight"] = s[o + ours + ".weight"]
            out[h + theirs + ".bias"] = s[o + ours + ".bias"]
    return out


def export_caption(model_dir: str | Path, out: str | Path) -> str:
    """Write the captioner ``model_dir`` as a Hugging Face directory ``out``: ``config.json``,
    ``generation_config.json`` and ``model.safetensors`` for ``VisionEncoderDecoderModel.
    from_pretrained``, and ``preprocessor_config.json`` (the run's pixel preprocessing) for
    ``ViTImageProcessor``. Returns the model_type written."""
    model_dir, out = Path(model_dir), Path(out)
    model = Captioner.load(model_dir)
    c = model.config
    save_hf_dir(out, config_to_hf(model), state_to_hf(model))
    generation = {"decoder_start_token_id": c.bos_id, "bos_token_id": c.bos_id,
                  "eos_token_id": c.eos_id, "pad_token_id": c.pad_id,
                  "max_length": c.max_target_positions}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n",
                                                encoding="utf-8")
    preprocess = Captioner.read_config(model_dir).get("preprocess")
    processor = hf_vit.preprocess_to_hf(preprocess, model)  # type: ignore[arg-type]
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n",
                                                  encoding="utf-8")
    return MODEL_TYPE


# The names the other importers use, for interop/hf.py's registry.
import_dir = import_caption
export_dir = export_caption
