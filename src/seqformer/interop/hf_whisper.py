"""Hugging Face Whisper (``WhisperForConditionalGeneration``) -> seqformer Whisper.

The layouts match one to one (see ``models/whisper.py``): HF's ``self_attn_layer_norm`` /
``encoder_attn_layer_norm`` / ``final_layer_norm`` are the pre-LN residual blocks' norms,
``fc1`` / ``fc2`` the FeedForward, ``encoder_attn`` the cross-attention, ``embed_positions`` the
encoder's sinusoid table and the decoder's learned positions, ``proj_out`` the output projection
tied to ``embed_tokens`` (an untied one is refused: ours is always tied). The tokenizer is
Whisper's byte-level BPE (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) with the
checkpoint's special ids: pad = eos = <|endoftext|>, decoding starts from
<|startoftranscript|>. Nothing is downloaded.

Export (:func:`export_dir`, ``seqformer export``) is the inverse, for ``encoder_block:
transformer`` models (HF has no Conformer Whisper): ``config.json``, ``model.safetensors``
(``proj_out`` left out, as ``save_pretrained`` leaves a tied weight out),
``generation_config.json`` and ``preprocessor_config.json`` (:func:`features_to_hf`). The
special ids are the model's own -- for a trained model seqformer's pad 0 / bos 1 / eos 2:
``decoder_start_token_id`` = bos, ``eos_token_id`` = eos, ``pad_token_id`` = pad, and the
generation config suppresses pad and bos (our search never emits them), forces eos at the last
position and allows ``max_target_positions - 1`` new tokens, so a plain ``generate(
input_features=...)`` is our greedy search. No language, task or timestamp tokens exist. Our
character tokenizer is *not* exported as a Whisper tokenizer (Whisper's is byte-level BPE with
its own special tokens): map ids to text with ``tokenizer/`` of the run (seqformer's
``load_tokenizer``). HF's encoder takes exactly ``2 * max_source_positions`` frames and masks
nothing, so pad the features to that length (the feature extractor does, see
:func:`features_to_hf`); ours masks padding, so the two agree exactly only on full-length input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
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
    ours = get("seqformer") or {}  # what our export writes that HF has no field for
    return WhisperConfig(
        label_smoothing=float(ours.get("label_smoothing", 0.1)),
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


# -- export: seqformer Whisper -> WhisperForConditionalGeneration --------------------------------

def config_to_hf(model: Whisper) -> dict[str, Any]:
    """A ``WhisperForConditionalGeneration`` ``config.json`` for ``model`` (the inverse of
    :func:`config_from_hf`; ``label_smoothing``, a training setting HF has no field for, goes
    into a ``seqformer`` entry, which transformers keeps). A Conformer encoder is refused."""
    c = model.config
    if c.encoder_block != "transformer":
        raise ConfigError(f"model.encoder_block={c.encoder_block!r}: Hugging Face Whisper has "
                          "no Conformer encoder, so only encoder_block: transformer exports")
    if c.activation != "gelu":
        raise ConfigError(f"model.activation={c.activation!r}: Hugging Face Whisper export "
                          "(and import) supports only exact 'gelu'")
    return {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "vocab_size": c.vocab_size, "num_mel_bins": c.num_mel_bins, "d_model": c.d_model,
        "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.heads, "decoder_attention_heads": c.heads,
        "encoder_ffn_dim": c.ffn_dim, "decoder_ffn_dim": c.ffn_dim,
        "max_source_positions": c.max_source_positions,
        "max_target_positions": c.max_target_positions, "activation_function": "gelu",
        "dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": c.dropout, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "scale_embedding": False, "tie_word_embeddings": True, "use_cache": True,
        "is_encoder_decoder": True, "apply_spec_augment": False,
        "pad_token_id": c.pad_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id, "suppress_tokens": None,
        "begin_suppress_tokens": None,
        "seqformer": {"label_smoothing": c.label_smoothing},
    }


def generation_config_to_hf(model: Whisper) -> dict[str, Any]:
    """``generation_config.json`` making ``generate`` our greedy search: start from bos, stop at
    eos, never emit pad or bos (``restrict`` in decoding/search.py), eos forced at the last of
    ``max_target_positions - 1`` new tokens, our limit (Whisper's generate adds the start token
    to ``max_length``, capped at ``max_target_positions``). Beam settings are left to the
    caller."""
    c = model.config
    return {
        "decoder_start_token_id": c.bos_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "pad_token_id": c.pad_id, "forced_eos_token_id": c.eos_id,
        "suppress_tokens": sorted({c.pad_id, c.bos_id} - {c.eos_id}),
        "begin_suppress_tokens": None, "max_length": c.max_target_positions - 1,
        "do_sample": False, "num_beams": 1, "return_timestamps": False,
    }


def state_to_hf(model: Whisper) -> dict[str, Tensor]:
    """Our state dict under ``WhisperForConditionalGeneration`` names (the inverse of
    :func:`state_from_hf`); the tied output projection is written once, as
    ``embed_tokens``."""
    fixed = {ours: theirs for theirs, ours in _FIXED.items()}
    tables = {"encoder": {o: t for t, o in _ENCODER_LAYER.items()},
              "decoder": {o: t for t, o in _DECODER_LAYER.items()}}
    ours_layer = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if name == "output.weight":
            continue  # tied to embed_tokens
        if name in fixed:
            out[fixed[name]] = tensor
        elif (m := ours_layer.match(name)) and m.group(3) in tables[m.group(1)]:
            stack, index, inner, kind = m.groups()
            out[f"model.{stack}.layers.{index}.{tables[stack][inner]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"Whisper weight {name!r} has no Hugging Face counterpart")
    return out


def features_to_hf(features: Mapping[str, Any] | None, model: Whisper) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``WhisperFeatureExtractor`` computing our ``features``
    (the inverse of :func:`features_from_hf`): ``feature_size`` = n_mels, ``n_fft``,
    ``hop_length``, ``sampling_rate`` map one to one. ``chunk_length`` (seconds the extractor
    pads or cuts every input to) is set to ``2 * max_source_positions`` frames' worth, the
    exact input length HF's encoder accepts. Refused where the extractor would compute other
    features: its mel filters always end at 8 kHz, so ``min(f_max, sample_rate / 2)`` must be
    8000. A non-integral ``chunk_length`` is written as a float (transformers computes
    ``n_samples`` from it); pass ``max_length=2 * max_source_positions * hop_length`` samples
    to the extractor if your version insists on an integer."""
    from seqformer.data.logmel import LogMel

    c = model.config
    mel = LogMel.from_dict(dict(features)) if features else LogMel(n_mels=c.num_mel_bins)
    if mel.n_mels != c.num_mel_bins:
        raise ConfigError(f"features.n_mels={mel.n_mels} does not match "
                          f"model.num_mel_bins={c.num_mel_bins}")
    if min(mel.f_max, mel.sample_rate / 2) != 8000.0:
        raise ConfigError(f"features: mel filters up to {min(mel.f_max, mel.sample_rate / 2)} "
                          "Hz; WhisperFeatureExtractor's always end at 8000 Hz, so its features "
                          "would differ")
    samples = c.max_frames * mel.hop_length
    chunk = (samples // mel.sample_rate if samples % mel.sample_rate == 0
             else samples / mel.sample_rate)
    return {
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": mel.n_mels,
        "sampling_rate": mel.sample_rate, "hop_length": mel.hop_length, "n_fft": mel.n_fft,
        "chunk_length": chunk, "padding_value": 0.0, "padding_side": "right", "dither": 0.0,
        "return_attention_mask": False,
    }


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the Whisper run ``model_dir`` as a Hugging Face directory ``out``: ``config.json``,
    ``model.safetensors`` and ``generation_config.json`` for
    ``WhisperForConditionalGeneration.from_pretrained``, ``preprocessor_config.json`` for
    ``WhisperFeatureExtractor.from_pretrained``. No tokenizer (see the module docstring).
    Returns the model_type written."""
    import json

    from seqformer.interop.hf_io import save_hf_dir
    from seqformer.models.whisper import read_whisper_config

    model_dir, out = Path(model_dir), Path(out)
    model = Whisper.load(model_dir)
    config = config_to_hf(model)  # refuses a Conformer before anything is written
    processor = features_to_hf(read_whisper_config(model_dir).get("features"), model)
    save_hf_dir(out, config, state_to_hf(model))
    for name, data in (("generation_config.json", generation_config_to_hf(model)),
                       ("preprocessor_config.json", processor)):
        (out / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return "whisper"
