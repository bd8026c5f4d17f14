"""Hugging Face ``SpeechT5HifiGan`` (``microsoft/speecht5_hifigan``) <-> seqformer ``HiFiGAN``.

Our module names are HF's (``models/hifigan.py``), so the weights map one to one; only the
config renames ``model_in_dim`` to ``num_mel_bins``. A checkpoint saved with weight
normalisation applied (``weight_g`` / ``weight_v``, or ``parametrizations.weight.original0`` /
``original1`` from ``torch.nn.utils.parametrizations``) is folded into plain weights,
``g * v / ||v||`` with the norm over every axis but the first (``weight_norm``'s ``dim=0``),
which is what ``remove_weight_norm`` computes. Export writes plain weights, as the published
checkpoint has them.

A vocoder directory has no feature extractor of its own; SpeechT5's TTS processor uses
SpeechT5FeatureExtractor's defaults, so :func:`features_from_hf` records those (with the
config's sampling rate and mel bins) unless a ``preprocessor_config.json`` beside it says
otherwise. Export writes that file from our ``features``, so the round trip keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqformer.data.tts_mel import TTSMel
from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_io import load_checkpoint, save_hf_dir
from seqformer.models.hifigan import HiFiGAN, HiFiGANConfig

MODEL_TYPE = "speecht5_hifigan"
PREPROCESSOR = "preprocessor_config.json"
# The config fields whose names are the same on both sides.
_SAME = ("sampling_rate", "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes",
         "resblock_kernel_sizes", "resblock_dilation_sizes", "leaky_relu_slope",
         "normalize_before")


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> HiFiGANConfig:
    """Our config for a ``SpeechT5HifiGanConfig`` dict (HF's defaults for absent keys)."""
    default = HiFiGANConfig()
    values: dict[str, Any] = {"num_mel_bins": hf.get("model_in_dim", default.num_mel_bins)}
    for name in _SAME:
        values[name] = hf.get(name, getattr(default, name))
    try:
        return HiFiGANConfig(
            num_mel_bins=int(values["num_mel_bins"]), sampling_rate=int(values["sampling_rate"]),
            upsample_initial_channel=int(values["upsample_initial_channel"]),
            upsample_rates=tuple(int(x) for x in values["upsample_rates"]),
            upsample_kernel_sizes=tuple(int(x) for x in values["upsample_kernel_sizes"]),
            resblock_kernel_sizes=tuple(int(x) for x in values["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds)
                                          for ds in values["resblock_dilation_sizes"]),
            leaky_relu_slope=float(values["leaky_relu_slope"]),
            normalize_before=bool(values["normalize_before"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: malformed SpeechT5HifiGan config ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(f"{where}: unsupported SpeechT5HifiGan config: {exc}") from None


def _fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Plain ``weight`` tensors for weight-normalised ones (see the module docstring)."""
    out = dict(state)
    pairs = [(k.removesuffix(".weight_g"), ".weight_g", ".weight_v") for k in state
             if k.endswith(".weight_g")]
    pairs += [(k.removesuffix(".parametrizations.weight.original0"),
               ".parametrizations.weight.original0", ".parametrizations.weight.original1")
              for k in state if k.endswith(".parametrizations.weight.original0")]
    for prefix, g_name, v_name in pairs:
        g, v = out.pop(prefix + g_name), out.pop(prefix + v_name)
        norm = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
        out[prefix + ".weight"] = g * v / norm
    return out


def state_from_hf(hf: dict[str, Tensor], config: HiFiGANConfig,
                  where: str = ".") -> dict[str, Tensor]:
    """SpeechT5HifiGan tensors -> HiFiGAN state dict (names unchanged, weight norm folded);
    a missing or extra tensor means another architecture."""
    state = _fold_weight_norm(dict(hf))
    with torch.device("meta"):  # names and shapes only
        expected = HiFiGAN(config).state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise CheckpointError(f"{where}: not a SpeechT5HifiGan of this config (missing "
                              f"{missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(f"{where}: weight {name!r} has shape "
                                  f"{tuple(state[name].shape)}, config.json implies "
                                  f"{tuple(tensor.shape)}")
    return {k: state[k].to(torch.float32).contiguous() for k in expected}


def load(directory: str | Path, trust_pickle: bool = False) -> HiFiGAN:
    """The ``SpeechT5HifiGan`` in the local directory ``directory`` as our HiFiGAN (eval)."""
    return load_checkpoint(directory, MODEL_TYPE, HiFiGAN, config_from_hf, state_from_hf,
                           trust_pickle)


def features_from_hf(directory: str | Path, config: HiFiGANConfig) -> TTSMel | None:
    """The mel settings the vocoder expects: ``preprocessor_config.json``'s when there is one,
    else SpeechT5FeatureExtractor's defaults at the config's sampling rate and mel bins when
    those fit it (a valid band, a hop equal to the upsampling); else None (unknown)."""
    path = Path(directory) / PREPROCESSOR
    if path.is_file():
        try:
            hf = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
        try:
            return TTSMel.from_hf(hf, str(path))
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
    try:
        mel = TTSMel(sampling_rate=config.sampling_rate, num_mel_bins=config.num_mel_bins)
    except ConfigError:
        return None
    return mel if mel.hop_samples == config.hop_length else None


def import_hifigan(src_dir: str | Path, out_dir: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF ``SpeechT5HifiGan`` directory ``src_dir`` as a seqformer model directory
    ``out_dir`` (config.json with ``family: hifigan`` and, when known, ``features``;
    model.safetensors); returns the family."""
    model = load(src_dir, trust_pickle)
    features = features_from_hf(src_dir, model.config)
    model.save(out_dir, features.to_dict() if features is not None else None)
    return "hifigan"


def config_to_hf(config: HiFiGANConfig) -> dict[str, Any]:
    """A ``SpeechT5HifiGanConfig`` ``config.json`` for ``config``."""
    out: dict[str, Any] = {"architectures": ["SpeechT5HifiGan"], "model_type": MODEL_TYPE,
                           "model_in_dim": config.num_mel_bins, "initializer_range": 0.01}
    for name in _SAME:
        value = getattr(config, name)
        out[name] = ([list(x) for x in value] if name == "resblock_dilation_sizes"
                     else list(value) if isinstance(value, tuple) else value)
    return out


def state_to_hf(model: HiFiGAN) -> dict[str, Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def export_hifigan(model_dir: str | Path, out_dir: str | Path) -> str:
    """Write the seqformer HiFi-GAN ``model_dir`` as a Hugging Face directory ``out_dir``
    (config.json + model.safetensors for ``SpeechT5HifiGan.from_pretrained``, and the mel
    settings as a SpeechT5FeatureExtractor ``preprocessor_config.json`` when the model records
    them); returns the model_type written."""
    model = HiFiGAN.load(model_dir)
    save_hf_dir(out_dir, config_to_hf(model.config), state_to_hf(model))
    features = HiFiGAN.read_config(model_dir).get("features")
    if features:
        mel = TTSMel.from_dict(features, f"{model_dir}/config.json")
        preprocessor = {"feature_extractor_type": "SpeechT5FeatureExtractor", "feature_size": 1,
                        "padding_value": 0.0, "do_normalize": False,
                        "return_attention_mask": True, "padding_side": "right", **mel.to_hf()}
        (Path(out_dir) / PREPROCESSOR).write_text(json.dumps(preprocessor, indent=2) + "\n",
                                                  encoding="utf-8")
    return MODEL_TYPE


# The names interop/hf.py's registry uses for every architecture.
import_dir = import_hifigan
export_dir = export_hifigan
