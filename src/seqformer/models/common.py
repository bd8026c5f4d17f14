"""What every model family shares: config checks, and the model directory they save and load.

A model directory is ``config.json`` (the config's fields plus ``family``, which tells loaders
which class to build) and ``model.safetensors``; every command that takes ``--model`` reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.errors import CheckpointError, ConfigError


def save_model_dir(model: nn.Module, config: dict[str, Any], directory: str | Path) -> None:
    """Write ``config.json`` (atomically) and ``model.safetensors`` into ``directory``."""
    from seqformer.training.checkpoint import atomic_write_text, save_weights

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    save_weights(model, directory / "model.safetensors")


def family_config(directory: str | Path, family: str, what: str,
                  default: str | None = None) -> dict[str, Any]:
    """``config.json`` without its ``family`` field, which must name ``family`` (``default``
    when absent); otherwise a :class:`CheckpointError` saying the model is not ``what``."""
    from seqformer.models.seq2seq import read_model_config

    config = read_model_config(directory)
    found = config.pop("family", default)
    if found != family:
        raise CheckpointError(f"{directory}: a {found or 'unknown'} model, not {what}")
    return config


def load_weights_into(model: nn.Module, directory: str | Path, map_location: str) -> nn.Module:
    """``model`` with the weights of ``directory``, on ``map_location``, in eval mode."""
    from seqformer.training.checkpoint import load_weights

    load_weights(model, Path(directory) / "model.safetensors")
    return model.to(map_location).eval()


class SavedModel:
    """``save`` / ``load`` / ``config_json`` of a model whose config.json holds, next to the
    config's fields, one block of input settings under ``settings_key`` that inference must
    repeat (ViT: ``preprocess``; AST and Whisper: ``features``). The task writes the block and
    its inference side reads it back from config.json; the model itself ignores it. Mixed into
    an ``nn.Module`` whose constructor takes the config (and, if ``labelled``, label names)."""

    family: ClassVar[str]  # config.json's ``family``
    description: ClassVar[str]  # what another family is not: "a Vision Transformer"
    config_class: ClassVar[type]
    settings_key: ClassVar[str]
    labelled: ClassVar[bool] = False  # label names in config.json, after the config's fields
    config: Any
    labels: list[str]

    def config_json(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"family": self.family, **to_dict(self.config)}
        if self.labelled:
            data["labels"] = list(self.labels)
        if settings:
            data[self.settings_key] = settings
        return data

    def save(self, directory: str | Path, settings: dict[str, Any] | None = None) -> None:
        save_model_dir(self, self.config_json(settings), directory)

    @classmethod
    def read_config(cls, directory: str | Path) -> dict[str, Any]:
        """``config.json`` without ``family`` (a CheckpointError for another family)."""
        return family_config(directory, cls.family, cls.description)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> Self:
        data = cls.read_config(directory)
        data.pop(cls.settings_key, None)
        if cls.labelled:
            labels = [str(x) for x in data.pop("labels", [])] or None
            model = cls(from_dict(cls.config_class, data, f"{directory}/config.json"), labels)
        else:
            model = cls(from_dict(cls.config_class, data, f"{directory}/config.json"))
        return load_weights_into(model, directory, map_location)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SavedClassifier(SavedModel):
    """A :class:`SavedModel` classifying one fixed-shape input (ViT's images, AST's
    spectrograms) with label names; ``self.logits(inputs)`` gives (batch, num_labels)."""

    labelled: ClassVar[bool] = True

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """The most likely label index of each input (batch,)."""
        return self.logits(inputs).argmax(-1)


def check_label_names(labels: list[str] | None, num_labels: int) -> list[str]:
    """``labels`` as a list (empty for none); a ConfigError unless there are ``num_labels``."""
    if labels is not None and len(labels) != num_labels:
        raise ConfigError(f"{len(labels)} label names for model.num_labels={num_labels}")
    return list(labels or [])


def check_block_fields(config: Any) -> None:
    """Validate the fields of the shared blocks (``nn/``) that a model config carries:
    d_model/heads, layers, ffn_dim, max_len, dropouts, activation, positional encoding and,
    where the config has them, encoder_block / conv_kernel."""
    if config.d_model <= 0 or config.heads <= 0 or config.d_model % config.heads:
        raise ConfigError(f"model.d_model={config.d_model} must be a positive multiple of "
                          f"model.heads={config.heads}")
    for name in ("layers", "ffn_dim", "max_len"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(config, name)}")
    if not 0.0 <= config.dropout < 1.0 or not 0.0 <= config.attention_dropout < 1.0:
        raise ConfigError("model.dropout and model.attention_dropout must be in [0, 1)")
    # The allowed names come from nn/, so a new activation or encoding is one edit there.
    from seqformer.nn.feedforward import ACTIVATIONS
    from seqformer.nn.positional import POSITIONAL_KINDS

    if config.activation not in ACTIVATIONS:
        raise ConfigError(f"model.activation={config.activation!r}; use one of "
                          f"{', '.join(ACTIVATIONS)}")
    if config.positional not in POSITIONAL_KINDS:
        raise ConfigError(f"model.positional={config.positional!r}; use one of "
                          f"{', '.join(POSITIONAL_KINDS)}")
    if hasattr(config, "encoder_block"):  # encoder-decoders: Transformer or Conformer layers
        if config.encoder_block not in ("transformer", "conformer"):
            raise ConfigError(f"model.encoder_block must be 'transformer' or 'conformer', got "
                              f"{config.encoder_block!r}")
        kernel = config.conv_kernel
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"model.conv_kernel must be an odd positive integer (a centred "
                              f"window), got {kernel!r}")


def init_gpt2(model: nn.Module, layers: int) -> None:
    """GPT-2's init: N(0, 0.02) everywhere, and the projections that write into the residual
    stream (attention ``out_proj``, FFN ``linear2``) scaled by 1/sqrt(2 * layers) so its
    variance does not grow with depth. Shared by every causal stack built from our layers."""
    residual_std = 0.02 / math.sqrt(2 * layers)
    for name, module in model.named_modules():  # fixed order: same seed, same model
        if isinstance(module, nn.Linear):
            last = name.endswith(("out_proj", "linear2"))
            nn.init.normal_(module.weight, std=residual_std if last else 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)


def init_vit(model: nn.Module, *tokens: Tensor) -> None:
    """The ViT/DeiT init (HF's and timm's; AST starts from it): truncated N(0, 0.02) for
    Linear and Conv2d weights, zero biases, unit LayerNorms, then truncated N(0, 0.02) for each
    of ``tokens`` ([CLS], position table, ...) in the order given. Modules are visited in a
    fixed order: same seed, same model."""
    for sub in model.modules():
        if isinstance(sub, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
    for p in tokens:
        nn.init.trunc_normal_(p, std=0.02)
