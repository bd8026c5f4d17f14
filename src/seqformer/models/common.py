"""Checks every Transformer config shares, so each family rejects bad shapes the same way."""

from __future__ import annotations

from typing import Any

from seqformer.errors import ConfigError


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
