"""Hugging Face ``EncodecModel`` <-> seqformer's ``models/encodec.py``.

Read (:func:`import_dir`, alias :func:`import_encodec`): a local ``save_pretrained`` directory
of ``model_type: encodec``. The encoder and decoder keep HF's names (``models/encodec_seanet.py``
builds the same module tree); weight norm is read as torch's parametrization
(``conv.parametrizations.weight.original0`` / ``original1``, g / v, what transformers 5 saves)
or the legacy ``conv.weight_g`` / ``conv.weight_v`` (the Hub's facebook/encodec_* files). The
codebooks drop one level: HF's ``quantizer.layers.{i}.codebook.{embed, embed_avg,
cluster_size, inited}`` are our ``quantizer.layers.{i}.{...}``. ``codebook_dim`` !=
``hidden_size`` (which HF's model could not run either) is refused. Chunked models (the 48 kHz
one: ``chunk_length_s``, ``overlap``, ``normalize``) import as they are; their codes are one
sequence on our side, the chunks' codes concatenated (``models/encodec.py``), where HF gives
(chunks, batch, n_q, frames) with the last chunk padded. Safetensors only, unless
``trust_pickle``.

Write (:func:`export_dir`, alias :func:`export_encodec`): the inverse, in transformers 5's
parametrization names, with our training-only fields (EMA, k-means, loss weights) in a
``seqformer`` entry of ``config.json`` that import reads back, and a
``preprocessor_config.json`` for ``EncodecFeatureExtractor``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.config import to_dict
from seqformer.errors import CheckpointError
from seqformer.models.encodec import Encodec, EncodecConfig, load_encodec

MODEL_TYPE = "encodec"
_WEIGHT_NORM = "parametrizations.weight.original"
_LEGACY = {"weight_g": _WEIGHT_NORM + "0", "weight_v": _WEIGHT_NORM + "1"}
_HF_CODEBOOK = re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.(\w+)$")
_OUR_CODEBOOK = re.compile(r"^quantizer\.layers\.(\d+)\.(\w+)$")
# EncodecConfig fields with HF's name and meaning; the rest are ours (the `seqformer` entry).
_HF_FIELDS = ("audio_channels", "sampling_rate", "num_filters", "num_residual_layers",
              "upsampling_ratios", "hidden_size", "kernel_size", "last_kernel_size",
              "residual_kernel_size", "dilation_growth_rate", "use_causal_conv", "pad_mode",
              "compress", "num_lstm_layers", "trim_right_ratio", "norm_type",
              "use_conv_shortcut", "codebook_size", "codebook_dim", "target_bandwidths",
              "normalize", "chunk_length_s", "overlap")
_OURS = tuple(f.name for f in fields(EncodecConfig) if f.name not in _HF_FIELDS)


def config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> EncodecConfig:
    """Our config from HF's ``config.json`` (a dict); what we cannot run is a one-line
    CheckpointError naming the file."""
    from seqformer.config import from_dict
    from seqformer.errors import ConfigError

    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{where}: model_type={hf.get('model_type')!r}, not encodec")
    data = {name: hf[name] for name in _HF_FIELDS if name in hf}
    if data.get("codebook_dim") == data.get("hidden_size", EncodecConfig.hidden_size):
        data["codebook_dim"] = None  # HF fills it in from hidden_size
    ours = hf.get("seqformer") or {}
    data.update({name: ours[name] for name in _OURS if name in ours})
    try:
        return from_dict(EncodecConfig, data, where)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def config_to_hf(config: EncodecConfig) -> dict[str, Any]:
    """HF's ``config.json`` for ``config`` (the inverse of :func:`config_from_hf`)."""
    data = to_dict(config)
    hf: dict[str, Any] = {"architectures": ["EncodecModel"], "model_type": MODEL_TYPE,
                          "dtype": "float32"}
    hf.update({name: data[name] for name in _HF_FIELDS})
    hf["codebook_dim"] = config.codebook_dim or config.hidden_size
    hf["upsampling_ratios"] = list(config.upsampling_ratios)
    hf["target_bandwidths"] = list(config.target_bandwidths)
    hf["seqformer"] = {name: data[name] for name in _OURS}
    return hf


def state_from_hf(hf: Mapping[str, Tensor], where: str = ".") -> dict[str, Tensor]:
    """A HF ``EncodecModel`` state dict under our names."""
    out: dict[str, Tensor] = {}
    for name, tensor in hf.items():
        prefix, _, last = name.rpartition(".")
        if m := _HF_CODEBOOK.match(name):
            out[f"quantizer.layers.{m.group(1)}.{m.group(2)}"] = tensor
        elif name.startswith(("encoder.", "decoder.")):
            out[f"{prefix}.{_LEGACY[last]}" if last in _LEGACY else name] = tensor
        else:
            raise CheckpointError(f"{where}: Hugging Face weight {name!r} has no seqformer "
                                  "counterpart; not an EncodecModel checkpoint")
    return out


def state_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict under HF's names (the inverse of :func:`state_from_hf`)."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if m := _OUR_CODEBOOK.match(name):
            out[f"quantizer.layers.{m.group(1)}.codebook.{m.group(2)}"] = tensor.detach()
        elif name.startswith(("encoder.", "decoder.")):
            out[name] = tensor.detach()
        else:
            raise CheckpointError(f"encodec weight {name!r} has no Hugging Face counterpart")
    return out


def from_hf(path: str | Path, trust_pickle: bool = False) -> Encodec:
    """The HF EnCodec in the local directory ``path`` as ours, in eval mode."""
    from seqformer.interop.hf_io import load_hf_state_dict, read_hf_config
    from seqformer.training.checkpoint import check_state

    path = Path(path)
    config = config_from_hf(read_hf_config(path), str(path / "config.json"))
    model = Encodec(config)
    state = state_from_hf(load_hf_state_dict(path, trust_pickle), str(path))
    check_state(state, model.state_dict(), path)
    model.load_state_dict(state, strict=True)
    return model.eval()


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF directory ``src`` as a seqformer model directory ``out``; returns the
    family ("encodec")."""
    model = from_hf(src, trust_pickle)
    model.save(out)
    return model.family


def preprocessor_to_hf(config: EncodecConfig) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``EncodecFeatureExtractor`` (what ``AutoProcessor``
    reads to feed the exported model)."""
    return {"feature_extractor_type": "EncodecFeatureExtractor",
            "feature_size": config.audio_channels, "sampling_rate": config.sampling_rate,
            "padding_value": 0.0, "padding_side": "right", "chunk_length_s": None,
            "overlap": None, "return_attention_mask": True}


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the ``family: encodec`` model ``model_dir`` as a HF directory ``out``
    (``config.json``, ``model.safetensors``, ``preprocessor_config.json``); returns
    "encodec"."""
    from seqformer.interop.hf_io import save_hf_dir

    model = load_encodec(model_dir)
    save_hf_dir(out, config_to_hf(model.config), state_to_hf(model.state_dict()))
    (Path(out) / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_to_hf(model.config), indent=2) + "\n", encoding="utf-8")
    return MODEL_TYPE


import_encodec = import_dir
export_encodec = export_dir
