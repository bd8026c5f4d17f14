"""Hugging Face ViT (``ViTForImageClassification``) <-> seqformer ViT: config, state dict and
pixel preprocessing, both ways (import: :func:`import_dir`; export: :func:`export_dir`).

The layouts match one to one: HF's separate q/k/v/o linears are ``MultiHeadAttention``'s
projections, ``layernorm_before`` / ``layernorm_after`` the pre-LN residual blocks' norms,
``mlp.fc1`` / ``fc2`` the FeedForward, ``vit.layernorm`` the encoder's final norm. HF keeps
position embeddings as one (1, 1 + patches, d) parameter; ours is an Embedding table
(1 + patches, d). Both the current transformers names (``vit.layers.N.attention.q_proj``) and
the names of checkpoints saved before transformers 5 (``vit.encoder.layer.N.attention.
attention.query``, ``intermediate.dense``, ``output.dense``) are read. Nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.vit import ViT, ViTConfig

# (HF name inside layer N, seqformer name inside encoder.layers.N); legacy names included.
_LAYER = {
    "attention.q_proj": "self_attn.q_proj",
    "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj",
    "attention.o_proj": "self_attn.out_proj",
    "attention.attention.query": "self_attn.q_proj",
    "attention.attention.key": "self_attn.k_proj",
    "attention.attention.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "layernorm_before": "attn_block.norm",
    "layernorm_after": "ffn_block.norm",
    "mlp.fc1": "ffn.linear1",
    "mlp.fc2": "ffn.linear2",
    "intermediate.dense": "ffn.linear1",
    "output.dense": "ffn.linear2",
}
_FIXED = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.projection.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.projection.bias",
    "vit.layernorm.weight": "encoder.norm.weight",
    "vit.layernorm.bias": "encoder.norm.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
_HF_LAYER = re.compile(r"^vit\.(?:layers|encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$")
_POSITIONS = "vit.embeddings.position_embeddings"


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json") -> ViTConfig:
    """``ViTConfig`` from a HF ViT config (a ``config.json`` dict or a ``transformers``
    config object)."""
    get = hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))
    if get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act={get('hidden_act')!r}; only exact 'gelu' "
                              "ViTs map onto seqformer's blocks")
    if get("qkv_bias", True) is not True:
        raise CheckpointError(f"{where}: qkv_bias=false is not supported (seqformer's "
                              "attention projections have biases)")
    size, patch = get("image_size", 224), get("patch_size", 16)
    if not isinstance(size, int) or not isinstance(patch, int):
        raise CheckpointError(f"{where}: image_size={size!r}, patch_size={patch!r}; only "
                              "square images and patches are supported")
    labels = get("id2label") or {}
    return ViTConfig(
        image_size=size, patch_size=patch, channels=get("num_channels", 3),
        d_model=get("hidden_size", 768), heads=get("num_attention_heads", 12),
        layers=get("num_hidden_layers", 12), ffn_dim=get("intermediate_size", 3072),
        dropout=get("hidden_dropout_prob", 0.0),
        attention_dropout=get("attention_probs_dropout_prob", 0.0),
        num_labels=get("num_labels", None) or len(labels) or 2,
        layer_norm_eps=get("layer_norm_eps", 1e-12))


def state_from_hf(hf: Mapping[str, Tensor], config: ViTConfig | None = None,
                  where: str = ".") -> dict[str, Tensor]:
    """Rename a ``ViTForImageClassification`` state dict to :class:`ViT` names. An unknown
    name (a pooler, a masked-image-modelling decoder) is a CheckpointError naming it, since a
    skipped weight would silently stay random."""
    out = rename_from_hf(hf, _FIXED, _HF_LAYER, _POSITIONS, "ViT", "ViTForImageClassification",
                         where)
    if config is not None and "classifier.weight" not in out:
        raise CheckpointError(f"{where}: no classifier weights; import a "
                              "ViTForImageClassification checkpoint, not a bare ViTModel")
    return out


def rename_from_hf(hf: Mapping[str, Tensor], fixed: Mapping[str, str], layer: re.Pattern[str],
                   positions: str, model: str, architecture: str, where: str
                   ) -> dict[str, Tensor]:
    """Our names for a state dict in ViT's layout (ViT; AST, which shares it): ``positions``
    (HF's (1, n, d) parameter) becomes our (n, d) Embedding table, ``fixed`` names map one to
    one, and names inside layer N (``layer`` matches index, inner name, weight/bias) through
    ``_LAYER``. An unknown name is a CheckpointError naming it, since a skipped weight would
    silently stay random."""
    out: dict[str, Tensor] = {}
    for name, tensor in hf.items():
        if name == positions:
            out["position.embedding.weight"] = tensor.reshape(tensor.shape[-2], tensor.shape[-1])
            continue
        if name in fixed:
            out[fixed[name]] = tensor
            continue
        m = layer.match(name)
        if m and m.group(2) in _LAYER:
            index, inner, kind = m.groups()
            out[f"encoder.layers.{index}.{_LAYER[inner]}.{kind}"] = tensor
            continue
        raise CheckpointError(f"{where}: Hugging Face {model} weight {name!r} has no seqformer "
                              f"counterpart; only {architecture} is supported")
    return out


def load(directory: str | Path, trust_pickle: bool = False) -> ViT:
    """The ``ViTForImageClassification`` in the local directory ``directory`` as a ViT."""
    from seqformer.interop.hf_io import load_checkpoint

    def build(config: ViTConfig) -> ViT:
        return ViT(config)

    return load_checkpoint(directory, "vit", build, config_from_hf, state_from_hf, trust_pickle)


def preprocess_from_hf(directory: str | Path, channels: int) -> dict[str, Any]:
    """Our ``preprocess`` (pixel_max, mean, std) from ``preprocessor_config.json`` when there is
    one (HF's ViTImageProcessor: rescale by 1/255, normalise by image_mean / image_std);
    otherwise the identity, for pixels already normalised. Resizing is left to the caller."""
    import json

    path = Path(directory) / "preprocessor_config.json"
    identity = {"pixel_max": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    if not path.is_file():
        return identity
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
    out = dict(identity)
    if hf.get("do_rescale", True):
        pixel_max = 1.0 / float(hf.get("rescale_factor", 1 / 255))
        # 1 / (1 / 49) is 49.00000000000001: snap back, so our export's 1 / pixel_max returns
        # the integer pixel_max it came from.
        out["pixel_max"] = (float(round(pixel_max)) if abs(pixel_max - round(pixel_max))
                            <= 1e-12 * pixel_max else pixel_max)
    if hf.get("do_normalize", True):
        out["mean"] = [float(x) for x in hf.get("image_mean", [0.5] * channels)]
        out["std"] = [float(x) for x in hf.get("image_std", [0.5] * channels)]
    return out


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF ViT directory ``src`` as a seqformer run directory ``out`` (config.json
    with ``family: vit``, the label names of ``id2label`` and ``preprocess``)."""
    from seqformer.interop.hf_io import read_hf_config

    model = load(src, trust_pickle)
    id2label = read_hf_config(src).get("id2label") or {}
    names = [str(id2label.get(str(i), i)) for i in range(model.config.num_labels)]
    model.labels = names
    model.save(out, preprocess_from_hf(src, model.config.channels))
    return "vit"


# -- export: seqformer ViT -> ViTForImageClassification ------------------------------------------

# Names as ``save_pretrained`` writes them (transformers 5 still saves the pre-5 layout), so
# both old and new transformers read the export.
_EXPORT_LAYER = {
    "self_attn.q_proj": "attention.attention.query",
    "self_attn.k_proj": "attention.attention.key",
    "self_attn.v_proj": "attention.attention.value",
    "self_attn.out_proj": "attention.output.dense",
    "attn_block.norm": "layernorm_before",
    "ffn_block.norm": "layernorm_after",
    "ffn.linear1": "intermediate.dense",
    "ffn.linear2": "output.dense",
}
_OUR_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def encoder_config_to_hf(model: Any, what: str) -> dict[str, Any]:
    """The ``config.json`` fields ViT and AST share (their encoder, dropouts, labels: HF's AST
    is a ViT over spectrogram patches); ``what`` names the model in errors. ``id2label`` /
    ``label2id`` come from the label names (``LABEL_i`` when there are none)."""
    c = model.config
    if c.activation != "gelu":
        raise ConfigError(f"model.activation={c.activation!r}: Hugging Face {what} export (and "
                          "import) supports only exact 'gelu'")
    names = model.labels or [f"LABEL_{i}" for i in range(c.num_labels)]
    if len(set(names)) != len(names):
        raise ConfigError(f"label names {names} repeat; label2id needs distinct names")
    return {
        "hidden_size": c.d_model, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "intermediate_size": c.ffn_dim, "hidden_act": "gelu",
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
        "layer_norm_eps": c.layer_norm_eps, "qkv_bias": True, "num_labels": c.num_labels,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }


def config_to_hf(model: ViT) -> dict[str, Any]:
    """A ``ViTForImageClassification`` ``config.json`` for ``model``."""
    c = model.config
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit",
            "image_size": c.image_size, "patch_size": c.patch_size, "num_channels": c.channels,
            **encoder_config_to_hf(model, "ViT")}


def state_to_hf(model: ViT) -> dict[str, Tensor]:
    """Our state dict under ``ViTForImageClassification`` names (the inverse of
    :func:`state_from_hf`); positions get HF's leading batch axis back."""
    return rename_to_hf(model.state_dict(), _FIXED, _POSITIONS, "vit.encoder.layer", "ViT")


def rename_to_hf(state: Mapping[str, Tensor], fixed: Mapping[str, str], positions: str,
                 layer_prefix: str, model: str) -> dict[str, Tensor]:
    """The inverse of :func:`rename_from_hf` for a state dict in ViT's layout (ViT; AST, which
    shares it): ``fixed`` maps HF names to ours as there, our (n, d) position table becomes
    ``positions`` (1, n, d), and layer N's weights go under ``{layer_prefix}.N`` with the names
    ``save_pretrained`` writes. A weight with no counterpart is a CheckpointError."""
    ours_to_hf = {ours: theirs for theirs, ours in fixed.items()}
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if name == "position.embedding.weight":
            out[positions] = tensor.unsqueeze(0)
            continue
        if name in ours_to_hf:
            out[ours_to_hf[name]] = tensor
            continue
        m = _OUR_LAYER.match(name)
        if m is None or m.group(2) not in _EXPORT_LAYER:
            raise CheckpointError(f"{model} weight {name!r} has no Hugging Face counterpart")
        index, inner, kind = m.groups()
        out[f"{layer_prefix}.{index}.{_EXPORT_LAYER[inner]}.{kind}"] = tensor
    return out


def preprocess_to_hf(preprocess: Mapping[str, Any] | None, model: ViT) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``ViTImageProcessor`` doing what our ``preprocess``
    does: ``x * (1 / pixel_max)`` then ``(x - mean) / std`` per channel, the inverse of
    :func:`preprocess_from_hf`. The map is exact for images of the model's size. ``do_resize``
    is false because we never resize (an image of another size is refused, here and there
    alike); ``do_convert_rgb`` is false so a grey model's images stay one channel."""
    c = model.config
    pre = preprocess or {"pixel_max": 1.0, "mean": [0.0] * c.channels,
                         "std": [1.0] * c.channels}
    mean, std = [float(x) for x in pre["mean"]], [float(x) for x in pre["std"]]
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False, "size": {"height": c.image_size, "width": c.image_size},
        "do_rescale": float(pre["pixel_max"]) != 1.0,
        "rescale_factor": 1.0 / float(pre["pixel_max"]),
        "do_normalize": mean != [0.0] * len(mean) or std != [1.0] * len(std),
        "image_mean": mean, "image_std": std, "do_convert_rgb": False,
    }


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the ViT run ``model_dir`` as a Hugging Face directory ``out``: ``config.json``
    and ``model.safetensors`` for ``ViTForImageClassification.from_pretrained``, and
    ``preprocessor_config.json`` for ``ViTImageProcessor.from_pretrained`` (the run's pixel
    preprocessing). Returns the model_type written."""
    import json

    from seqformer.interop.hf_io import save_hf_dir
    from seqformer.models.vit import read_vit_config

    model_dir, out = Path(model_dir), Path(out)
    model = ViT.load(model_dir)
    save_hf_dir(out, config_to_hf(model), state_to_hf(model))
    processor = preprocess_to_hf(read_vit_config(model_dir).get("preprocess"), model)
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n",
                                                  encoding="utf-8")
    return "vit"
