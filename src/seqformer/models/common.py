"""What every model family shares: config checks, and the model directory they save and load.

A model directory is ``config.json`` (the config's fields plus ``family``, which tells loaders
which class to build) and ``model.safetensors``; every command that takes ``--model`` reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import nn

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


def check_block_fields(config: Any) -> None:
    """Validate the fields of the shared blocks (``nn/``) that a model config carries:
    d_model/heads, layers, ffn_dim, max_len, dropouts, activation and positional encoding."""
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
