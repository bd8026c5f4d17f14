"""Hugging Face Whisper (``WhisperForConditionalGeneration``) -> seqformer Whisper.

The layouts match one to one (see ``models/whisper.py``): HF's ``self_attn_layer_norm`` /
``encoder_attn_layer_norm`` / ``final_layer_norm`` are the pre-LN residual blocks' norms,
``fc1`` / ``fc2`` the FeedForward, ``encoder_attn`` the cross-attention, ``embed_positions`` the
encoder's sinusoid table and the decoder's learned positions, ``proj_out`` the output projection
tied to ``embed_tokens`` (an untied one is refused: ours is always tied). The tokenizer is
Whisper's byte-level BPE (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) with the
checkpoint's special ids: pad = eos = <|endoftext|>, decoding starts from
<|startoftranscript|>. Nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError
from seqformer.models.whisper import Whisper, WhisperConfig

_ENCODER_LAYER = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_layer_norm": "attn_block.norm",
    "fc1": "ffn.linear1",
    "fc2": "ffn.linear2",
    "final_layer_norm": "ffn_block.norm",
}
_DECODER_LAYER = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_layer_norm": "self_block.norm",
    "encoder_attn.q_proj": "cross_attn.q_proj",
    "encoder_attn.k_proj": "cross_attn.k_proj",
    "encoder_attn.v_proj": "cross_attn.v_proj",
    "encoder_attn.out_proj": "cross_attn.out_proj",
    "encoder_attn_layer_norm": "cross_block.norm",
    "fc1": "ffn.linear1",
    "fc2": "ffn.linear2",
    "final_layer_norm": "ffn_block.norm",
}
_FIXED = {
    "model.encoder.conv1.weight": "conv1.weight",
    "model.encoder.conv1.bias": "conv1.bias",
    "model.encoder.conv2.weight": "conv2.weight",
    "model.encoder.conv2.bias": "conv2.bias",
    "model.encoder.embed_positions.weight": "encoder_positions",
    "model.encoder.layer_norm.weight": "encoder.norm.weight",
    "model.encoder.layer_norm.bias": "encoder.norm.bias",
    "model.decoder.embed_tokens.weight": "embed_tokens.weight",
    "model.decoder.embed_positions.weight": "decoder_positions.embedding.weight",
    "model.decoder.layer_norm.weight": "decoder.norm.weight",
    "model.decoder.layer_norm.bias": "decoder.norm.bias",
}
_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json") -> WhisperConfig:
    """``WhisperConfig`` from a HF Whisper config (``config.json`` dict or config object)."""
    get = hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))
    if get("activation_function", "gelu") != "gelu":
        raise CheckpointError(f"{where}: activation_function={get('activation_function')!r}; "
                              "only exact 'gelu' Whispers map onto seqformer's blocks")
    if get("scale_embedding", False):
        raise CheckpointError(f"{where}: scale_embedding=true is not Whisper's layout")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"),
                 ("encoder_ffn_dim", "decoder_ffn_dim")):
        if get(a) != get(b):
            raise CheckpointError(f"{where}: {a}={get(a)} differs from {b}={get(b)}; seqformer's "
                                  "Whisper uses one value for both stacks")
    eos = get("eos_token_id", 50257)
    pad = get("pad_token_id")
    return WhisperConfig(
        vocab_size=get("vocab_size", 51865), num_mel_bins=get("num_mel_bins", 80),
        d_model=get("d_model", 384), heads=get("encoder_attention_heads", 6),
        encoder_layers=get("encoder_layers", 4), decoder_layers=get("decoder_layers", 4),
        ffn_dim=get("encoder_ffn_dim", 1536),
        max_source_positions=get("max_source_positions", 1500),
        max_target_positions=get("max_target_positions", 448),
        dropout=get("dropout", 0.0) or 0.0, attention_dropout=get("attention_dropout", 0.0) or 0.0,
        pad_id=eos if pad is None else pad,
        bos_id=get("decoder_start_token_id", 50258), eos_id=eos)


def state_from_hf(hf: Mapping[str, Tensor], config: WhisperConfig | None = None,
                  where: str = ".") -> dict[str, Tensor]:
    """Rename a ``WhisperForConditionalGeneration`` state dict to :class:`Whisper` names. An
    unknown name is a CheckpointError naming it: a skipped weight would silently stay random."""
    out: dict[str, Tensor] = {}
    proj_out = None
    for name, tensor in hf.items():
        if name == "proj_out.weight":
            proj_out = tensor
        elif name in _FIXED:
            out[_FIXED[name]] = tensor
        elif (m := _LAYER.match(name)) and m.group(3) in (
                _ENCODER_LAYER if m.group(1) == "encoder" else _DECODER_LAYER):
            stack, index, inner, kind = m.groups()
            table = _ENCODER_LAYER if stack == "encoder" else _DECODER_LAYER
            out[f"{stack}.layers.{index}.{table[inner]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"{where}: Hugging Face Whisper weight {name!r} has no "
                                  "seqformer counterpart; only WhisperForConditionalGeneration "
                                  "is supported")
    embed = out.get("embed_tokens.weight")
    if embed is None:
        raise CheckpointError(f"{where}: no model.decoder.embed_tokens.weight; not a Whisper "
                              "checkpoint")
    if proj_out is not None and not proj_out.equal(embed):
        raise CheckpointError(f"{where}: proj_out is not tied to embed_tokens; seqformer's "
                              "Whisper ties them")
    out["output.weight"] = embed
    return out


def special_ids(config: WhisperConfig) -> dict[str, int]:
    """Whisper's BPE has no unknown token (byte-level); <|endoftext|> stands in, as for GPT-2."""
    return {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id,
            "unk": config.eos_id}


def load(directory: str | Path, trust_pickle: bool = False) -> Whisper:
    """The ``WhisperForConditionalGeneration`` in the local directory ``directory`` as ours."""
    from seqformer.interop.hf_io import load_checkpoint

    return load_checkpoint(directory, "whisper", Whisper, config_from_hf, state_from_hf,
                           trust_pickle)


def features_from_hf(directory: str | Path) -> dict[str, Any]:
    """Our log-mel settings from ``preprocessor_config.json`` (WhisperFeatureExtractor) when
    there is one; Whisper's defaults otherwise."""
    import json

    from seqformer.data.logmel import LogMel

    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return LogMel().to_dict()
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
    return LogMel(n_mels=int(hf.get("feature_size", 80)), n_fft=int(hf.get("n_fft", 400)),
                  hop_length=int(hf.get("hop_length", 160)),
                  sample_rate=int(hf.get("sampling_rate", 16000))).to_dict()


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF Whisper directory ``src`` as a seqformer model directory ``out``
    (``config.json`` with ``family: whisper`` and ``features``, the weights, and
    ``tokenizer/`` when the checkpoint has one)."""
    from seqformer.interop.hf_tokenizers import gpt2_tokenizer

    model = load(src, trust_pickle)
    model.save(out, features_from_hf(src))
    tokenizer = gpt2_tokenizer(src, special_ids(model.config))
    if tokenizer is not None:
        tokenizer.save(Path(out) / "tokenizer")
    return "whisper"
