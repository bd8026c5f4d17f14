"""The Audio Spectrogram Transformer (AST; Gong, Chung and Glass, 2021).

A clip is a log-mel filterbank "image" (``data/fbank.py``): ``(frames, num_mel_bins)``, padded or
cropped to ``max_frames``. It is cut into ``patch_size`` x ``patch_size`` squares that
**overlap**: a Conv2d with kernel ``patch_size`` and strides ``frequency_stride`` (over mel
bins) and ``time_stride`` (over frames), 10 and 10 against a kernel of 16 in the paper, since
the overlap measurably helped it. Patches are read frequency-major (the Conv2d runs over
(mel, time), as in the reference code and Hugging Face, so imported position embeddings line
up). A [CLS] and a distillation token (DeiT's, which AST was initialised from) are prepended,
learned positions added, and the sequence runs through the shared pre-LN
``nn.layers.Encoder`` (GELU, LayerNorm eps 1e-12) with its final LayerNorm. The classifier
reads the average of the two token outputs through one more LayerNorm and a Linear -- exactly
HF's ``ASTForAudioClassification`` (``interop/hf_audio.py`` maps its weights one to one).

It returns BERT's :class:`~seqformer.models.bert.EncoderOutput`, so the shared Trainer treats
it like every other classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.bert import EncoderOutput, encoder_loss
from seqformer.models.common import (
    SavedClassifier,
    check_block_fields,
    check_label_names,
    init_vit,
)
from seqformer.nn.layers import Encoder
from seqformer.nn.positional import LearnedPositionalEmbedding

FAMILY = "ast"


@dataclass(frozen=True)
class ASTConfig:
    """Shape of an AST. The input is ``max_frames`` x ``num_mel_bins`` features (HF's
    ``max_length`` / ``num_mel_bins``); ``num_labels`` comes from the data. AST-Base is d_model
    768, 12 heads, 12 layers, ffn 3072, 1024 frames x 128 bins, patch 16, strides 10."""

    num_mel_bins: int = 128
    max_frames: int = 100
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    d_model: int = 64
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.0
    num_labels: int = 12
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "max_frames", "patch_size", "frequency_stride",
                     "time_stride"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        for name in ("num_mel_bins", "max_frames"):
            if getattr(self, name) < self.patch_size:
                raise ConfigError(f"model.{name}={getattr(self, name)} is smaller than "
                                  f"model.patch_size={self.patch_size}; no patch would fit")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")
        if not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"model.layer_norm_eps must be in (0, 1), got "
                              f"{self.layer_norm_eps}")
        check_block_fields(self)

    # Derived, so not fields of config.json; the shared block checks read the last two.
    @property
    def grid(self) -> tuple[int, int]:
        """Patches along (frequency, time): HF's ``get_shape`` (a strided conv, no padding)."""
        return ((self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
                (self.max_frames - self.patch_size) // self.time_stride + 1)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def max_len(self) -> int:
        return self.num_patches + 2  # [CLS] and distillation tokens

    @property
    def positional(self) -> str:
        return "learned"


@dataclass
class AudioBatch:
    """``features`` (batch, max_frames, num_mel_bins), normalised log-mel; ``labels`` (batch,)."""

    features: Tensor
    labels: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What n_tgt_tokens counts, for the Trainer's throughput (clips/s, not tok/s).
    count_unit: ClassVar[str] = "clips"

    def to(self, device: torch.device | str) -> AudioBatch:
        return AudioBatch(to_device(self.features, device), to_device(self.labels, device),
                          self.extra)

    @property
    def n_tgt_tokens(self) -> int:
        """Clips in the batch (the Trainer's throughput is clips per second here)."""
        return int(self.features.shape[0])

    def __len__(self) -> int:
        return int(self.features.shape[0])


class SpectrogramPatches(nn.Module):
    """(batch, frames, mel) -> (batch, num_patches, d_model), overlapping patches read
    frequency-major: patch (f, t) is at index f * time_patches + t."""

    def __init__(self, d_model: int, patch_size: int, frequency_stride: int,
                 time_stride: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(1, d_model, kernel_size=patch_size,
                                    stride=(frequency_stride, time_stride))

    def forward(self, features: Tensor) -> Tensor:
        x = features.unsqueeze(1).transpose(2, 3)  # (batch, 1, mel, frames)
        return self.projection(x).flatten(2).transpose(1, 2)


class AST(nn.Module, SavedClassifier):
    """Patches + [CLS] + distillation + positions -> pre-LN encoder -> final LayerNorm ->
    mean of the two token outputs -> LayerNorm -> Linear.

    Saved (``save`` / ``load``, from :class:`SavedClassifier`) with ``family: ast``, the label
    names and ``features``: the filterbank settings and the normalisation mean/std, so
    inference computes the same input."""

    family = FAMILY
    description = "an Audio Spectrogram Transformer"
    config_class = ASTConfig
    settings_key = "features"

    def __init__(self, config: ASTConfig, labels: list[str] | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.labels = check_label_names(labels, config.num_labels)
        self.head_kind = "classify"
        self.patch_embed = SpectrogramPatches(c.d_model, c.patch_size, c.frequency_stride,
                                              c.time_stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.position = LearnedPositionalEmbedding(c.d_model, c.max_len)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=True,
                               norm_eps=c.layer_norm_eps)
        # HF's ASTMLPHead: its own LayerNorm after the encoder's, then the linear classifier.
        self.head_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.classifier = nn.Linear(c.d_model, c.num_labels)
        # The ViT/DeiT init AST starts from; then its two tokens and the positions.
        init_vit(self, self.cls_token, self.distillation_token, self.position.embedding.weight)

    def hidden(self, features: Tensor) -> Tensor:
        """Final (normalised) states (batch, 2 + num_patches, d_model); [CLS] at 0,
        distillation at 1."""
        c = self.config
        if features.dim() != 3 or tuple(features.shape[1:]) != (c.max_frames, c.num_mel_bins):
            raise ValueError(f"expected features (batch, {c.max_frames}, {c.num_mel_bins}), got "
                             f"{tuple(features.shape)}")
        x = self.patch_embed(features)
        n = len(x)
        x = torch.cat([self.cls_token.expand(n, -1, -1),
                       self.distillation_token.expand(n, -1, -1), x], dim=1)
        x = self.dropout(x + self.position(x.shape[1]))
        x, _ = self.encoder(x)
        return x

    def head(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.head_norm((hidden[:, 0] + hidden[:, 1]) / 2))

    def logits(self, features: Tensor) -> Tensor:
        return self.head(self.hidden(features))

    def forward(self, batch: AudioBatch) -> EncoderOutput:
        hidden = self.hidden(batch.features)
        logits = self.head(hidden)
        loss = encoder_loss("classify", logits, batch.labels)
        return EncoderOutput(loss, loss.detach(), logits, hidden, len(batch))

    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> AST:
        """A local Hugging Face ``ASTForAudioClassification`` directory as a seqformer AST."""
        from seqformer.interop import hf_audio

        return hf_audio.load(path, trust_pickle)


def read_ast_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of an AST run without ``family`` (a CheckpointError for another one)."""
    return AST.read_config(directory)
