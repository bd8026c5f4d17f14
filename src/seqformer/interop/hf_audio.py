"""Hugging Face AST (``ASTForAudioClassification``) -> seqformer AST: config, weights, features.

The layouts match one to one, as for ViT (``hf_vit.py``, whose per-layer names AST shares):
q/k/v/o linears are ``MultiHeadAttention``'s projections, ``layernorm_before`` / ``_after`` the
pre-LN blocks' norms, ``mlp.fc1`` / ``fc2`` the FeedForward, ``audio_spectrogram_transformer.
layernorm`` the encoder's final norm, ``classifier.layernorm`` / ``classifier.dense`` our
``head_norm`` / ``classifier``. HF keeps position embeddings as one (1, 2 + patches, d)
parameter; ours is an Embedding table. Current names and those of checkpoints saved before
transformers 5 (``encoder.layer.N.attention.attention.query`` ...) are both read; HF's
``max_length`` is our ``max_frames``. ``preprocessor_config.json`` (ASTFeatureExtractor) gives
the feature settings: sampling rate, mel bins, mean and std. Nothing is downloaded.

Export (:func:`export_dir`, ``seqformer export``) is the inverse: ``config.json`` with
``id2label`` / ``label2id``, ``model.safetensors`` under the names ``save_pretrained`` writes,
and ``preprocessor_config.json`` for ``ASTFeatureExtractor`` (:func:`features_to_hf`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_vit import encoder_config_to_hf, rename_from_hf, rename_to_hf
from seqformer.models.audio import AST, ASTConfig

MODEL_TYPE = "audio-spectrogram-transformer"
_PREFIX = "audio_spectrogram_transformer."
_FIXED = {
    _PREFIX + "embeddings.cls_token": "cls_token",
    _PREFIX + "embeddings.distillation_token": "distillation_token",
    _PREFIX + "embeddings.patch_embeddings.projection.weight": "patch_embed.projection.weight",
    _PREFIX + "embeddings.patch_embeddings.projection.bias": "patch_embed.projection.bias",
    _PREFIX + "layernorm.weight": "encoder.norm.weight",
    _PREFIX + "layernorm.bias": "encoder.norm.bias",
    "classifier.layernorm.weight": "head_norm.weight",
    "classifier.layernorm.bias": "head_norm.bias",
    "classifier.dense.weight": "classifier.weight",
    "classifier.dense.bias": "classifier.bias",
}
_HF_LAYER = re.compile(r"^audio_spectrogram_transformer\.(?:layers|encoder\.layer)\.(\d+)\."
                       r"(.+)\.(weight|bias)$")
_POSITIONS = _PREFIX + "embeddings.position_embeddings"


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json") -> ASTConfig:
    """``ASTConfig`` from a HF AST config (a ``config.json`` dict or a ``transformers``
    config object)."""
    get = hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))
    if get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act={get('hidden_act')!r}; only exact 'gelu' "
                              "ASTs map onto seqformer's blocks")
    if get("qkv_bias", True) is not True:
        raise CheckpointError(f"{where}: qkv_bias=false is not supported (seqformer's "
                              "attention projections have biases)")
    patch = get("patch_size", 16)
    if isinstance(patch, list | tuple):
        if len(set(patch)) != 1:
            raise CheckpointError(f"{where}: patch_size={patch!r}; only square patches are "
                                  "supported")
        patch = patch[0]
    labels = get("id2label") or {}
    return ASTConfig(
        num_mel_bins=get("num_mel_bins", 128), max_frames=get("max_length", 1024),
        patch_size=patch, frequency_stride=get("frequency_stride", 10),
        time_stride=get("time_stride", 10), d_model=get("hidden_size", 768),
        heads=get("num_attention_heads", 12), layers=get("num_hidden_layers", 12),
        ffn_dim=get("intermediate_size", 3072), dropout=get("hidden_dropout_prob", 0.0),
        attention_dropout=get("attention_probs_dropout_prob", 0.0),
        num_labels=get("num_labels", None) or len(labels) or 2,
        layer_norm_eps=get("layer_norm_eps", 1e-12))


def state_from_hf(hf: Mapping[str, Tensor], config: ASTConfig | None = None,
                  where: str = ".") -> dict[str, Tensor]:
    """Rename an ``ASTForAudioClassification`` state dict to :class:`AST` names. An unknown
    name is a CheckpointError naming it, since a skipped weight would silently stay random."""
    out = rename_from_hf(hf, _FIXED, _HF_LAYER, _POSITIONS, "AST", "ASTForAudioClassification",
                         where)
    if config is not None and "classifier.weight" not in out:
        raise CheckpointError(f"{where}: no classifier weights; import an "
                              "ASTForAudioClassification checkpoint, not a bare ASTModel")
    return out


def load(directory: str | Path, trust_pickle: bool = False) -> AST:
    """The ``ASTForAudioClassification`` in the local directory ``directory`` as an AST."""
    from seqformer.interop.hf_io import load_checkpoint

    def build(config: ASTConfig) -> AST:
        return AST(config)

    return load_checkpoint(directory, MODEL_TYPE, build, config_from_hf, state_from_hf,
                           trust_pickle)


def features_from_hf(directory: str | Path, config: ASTConfig) -> dict[str, Any]:
    """Our ``features`` (:class:`~seqformer.data.fbank.Fbank` fields) from
    ``preprocessor_config.json`` when there is one (ASTFeatureExtractor: sampling_rate, mean,
    std, do_normalize); otherwise AST's AudioSet statistics, its extractor's defaults."""
    from seqformer.data.fbank import Fbank

    path = Path(directory) / "preprocessor_config.json"
    hf: dict[str, Any] = {}
    if path.is_file():
        try:
            hf = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
    mean, std = float(hf.get("mean", -4.2677393)), float(hf.get("std", 4.5689974))
    if not hf.get("do_normalize", True):
        mean, std = 0.0, 0.5  # (x - 0) / (2 * 0.5): unnormalised, as the extractor leaves it
    return Fbank(num_mel_bins=config.num_mel_bins, max_frames=config.max_frames,
                 sample_rate=int(hf.get("sampling_rate", 16000)), mean=mean,
                 std=std).to_dict()


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF AST directory ``src`` as a seqformer run directory ``out`` (config.json
    with ``family: ast``, the label names of ``id2label`` and ``features``)."""
    from seqformer.interop.hf_io import read_hf_config

    model = load(src, trust_pickle)
    id2label = read_hf_config(src).get("id2label") or {}
    model.labels = [str(id2label.get(str(i), i)) for i in range(model.config.num_labels)]
    model.save(out, features_from_hf(src, model.config))
    return "ast"


# -- export: seqformer AST -> ASTForAudioClassification ------------------------------------------

# ASTFeatureExtractor fixes these (Kaldi's defaults; its numpy path even hard-codes 400 / 160
# samples, a 512-point FFT and 257 bins, i.e. 16 kHz), so only runs with them export.
_EXTRACTOR_FIXED = {"sample_rate": 16000, "frame_length_ms": 25.0, "frame_shift_ms": 10.0,
                    "low_freq": 20.0, "preemphasis": 0.97}


def config_to_hf(model: AST) -> dict[str, Any]:
    """An ``ASTForAudioClassification`` ``config.json`` for ``model`` (the inverse of
    :func:`config_from_hf`)."""
    c = model.config
    return {"architectures": ["ASTForAudioClassification"], "model_type": MODEL_TYPE,
            "num_mel_bins": c.num_mel_bins, "max_length": c.max_frames,
            "patch_size": c.patch_size, "frequency_stride": c.frequency_stride,
            "time_stride": c.time_stride, **encoder_config_to_hf(model, "AST")}


def state_to_hf(model: AST) -> dict[str, Tensor]:
    """Our state dict under ``ASTForAudioClassification`` names (the inverse of
    :func:`state_from_hf`); positions get HF's leading batch axis back."""
    return rename_to_hf(model.state_dict(), _FIXED, _POSITIONS,
                        _PREFIX + "encoder.layer", "AST")


def features_to_hf(features: Mapping[str, Any] | None, model: AST) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``ASTFeatureExtractor`` computing our ``features``:
    sampling rate, mel bins, ``max_length`` (our ``max_frames``) and the normalisation
    ``(x - mean) / (2 * std)`` map one to one (the inverse of :func:`features_from_hf`).

    What does not map: the extractor has no fields for the frame length / shift, the low
    frequency edge or pre-emphasis (it uses Kaldi's 25 ms / 10 ms / 20 Hz / 0.97, and its
    numpy path assumes 16 kHz), so a run with other values is refused rather than exported
    with an extractor that would compute different features. A run saved without
    ``features`` gets unnormalised features (mean 0, std 0.5), what our Fbank does unfitted."""
    from seqformer.data.fbank import Fbank

    c = model.config
    fbank = (Fbank.from_dict(dict(features)) if features else
             Fbank(num_mel_bins=c.num_mel_bins, max_frames=c.max_frames))
    if (fbank.num_mel_bins, fbank.max_frames) != (c.num_mel_bins, c.max_frames):
        raise ConfigError(f"features ({fbank.num_mel_bins} bins x {fbank.max_frames} frames) "
                          f"do not match the model ({c.num_mel_bins} x {c.max_frames})")
    for name, value in _EXTRACTOR_FIXED.items():
        if getattr(fbank, name) != value:
            raise ConfigError(f"features.{name}={getattr(fbank, name)!r}: ASTFeatureExtractor "
                              f"fixes it at {value!r}, so its features would differ; only "
                              "runs with Kaldi's defaults export")
    return {
        "feature_extractor_type": "ASTFeatureExtractor", "feature_size": 1,
        "sampling_rate": fbank.sample_rate, "num_mel_bins": fbank.num_mel_bins,
        "max_length": fbank.max_frames, "padding_value": 0.0, "do_normalize": True,
        "mean": fbank.mean, "std": fbank.std, "return_attention_mask": False,
        "padding_side": "right",
    }


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the AST run ``model_dir`` as a Hugging Face directory ``out``: ``config.json``
    and ``model.safetensors`` for ``ASTForAudioClassification.from_pretrained``, and
    ``preprocessor_config.json`` for ``ASTFeatureExtractor.from_pretrained`` (the run's
    filterbank settings and mean / std). Returns the model_type written."""
    from seqformer.interop.hf_io import save_hf_dir
    from seqformer.models.audio import read_ast_config

    model_dir, out = Path(model_dir), Path(out)
    model = AST.load(model_dir)
    processor = features_to_hf(read_ast_config(model_dir).get("features"), model)
    save_hf_dir(out, config_to_hf(model), state_to_hf(model))
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n",
                                                  encoding="utf-8")
    return MODEL_TYPE
