"""The Vision Transformer (ViT; Dosovitskiy et al., 2020): "an image is worth 16x16 words".

An image (batch, channels, height, width) is cut into non-overlapping ``patch_size`` squares;
each patch is linearly projected to ``d_model`` (a Conv2d whose kernel and stride are the patch
size -- the same as flattening each patch and applying one shared Linear, and the layout of the
reference code and Hugging Face), read left to right, top to bottom. A learned [CLS] vector is
prepended, learned position embeddings are added, and the sequence runs through the shared
pre-LN ``nn.layers.Encoder`` (GELU, LayerNorm eps 1e-12 like HF's ``ViTConfig``) with its final
LayerNorm; a linear classifier reads the [CLS] output. There is no padding: every image of a
model has the same size, so every sequence has ``num_patches + 1`` positions.

It returns BERT's :class:`~seqformer.models.bert.EncoderOutput` (``.loss`` cross-entropy,
``.logits`` (batch, num_labels)), so the shared Trainer treats it like any classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

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


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT. ``image_size`` is the side of a square image, ``patch_size`` must divide
    it; ``num_labels`` comes from the data. ViT-Base is d_model 768, 12 heads, 12 layers, ffn
    3072, patch 16 on 224x224."""

    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    d_model: int = 64
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.0
    num_labels: int = 10
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.patch_size={self.patch_size} must divide "
                              f"model.image_size={self.image_size}")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")
        if not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"model.layer_norm_eps must be in (0, 1), got "
                              f"{self.layer_norm_eps}")
        check_block_fields(self)

    # What the shared block checks read; derived, so not fields of config.json.
    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def max_len(self) -> int:
        return self.num_patches + 1

    @property
    def positional(self) -> str:
        return "learned"


@dataclass
class ImageBatch:
    """``pixels`` (batch, channels, height, width) float, normalised; ``labels`` (batch,)."""

    pixels: Tensor
    labels: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What n_tgt_tokens counts, for the Trainer's throughput (images/s, not tok/s).
    count_unit: ClassVar[str] = "images"

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(to_device(self.pixels, device), to_device(self.labels, device),
                          self.extra)

    @property
    def n_tgt_tokens(self) -> int:
        """Images in the batch: the Trainer's ``tokens_per_s`` is images per second here (it
        says so: ``count_unit``, and ``images_per_s`` in log.jsonl)."""
        return int(self.pixels.shape[0])

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


class PatchEmbedding(nn.Module):
    """(batch, channels, H, W) -> (batch, num_patches, d_model), patches in row-major order."""

    def __init__(self, channels: int, d_model: int, patch_size: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class ViT(nn.Module, SavedClassifier):
    """Patches + [CLS] + positions -> pre-LN encoder -> final LayerNorm -> linear on [CLS].

    Saved (``save`` / ``load``, from :class:`SavedClassifier`) with ``family: vit``, the label
    names and (from training) ``preprocess``: how raw pixels are scaled and normalised, so
    inference repeats it."""

    family = "vit"
    description = "a Vision Transformer"
    config_class = ViTConfig
    settings_key = "preprocess"

    def __init__(self, config: ViTConfig, labels: list[str] | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.labels = check_label_names(labels, config.num_labels)
        self.head_kind = "classify"
        self.patch_embed = PatchEmbedding(c.channels, c.d_model, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.position = LearnedPositionalEmbedding(c.d_model, c.max_len)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=True,
                               norm_eps=c.layer_norm_eps)
        self.classifier = nn.Linear(c.d_model, c.num_labels)
        # HF's and timm's ViT init: truncated N(0, 0.02), then [CLS] and positions.
        init_vit(self, self.cls_token, self.position.embedding.weight)

    def encoder_input(self, pixels: Tensor) -> Tensor:
        """The encoder's input (batch, 1 + num_patches, d_model): [CLS], then the patches in
        row-major order, positions added. One method for :meth:`hidden` and
        :meth:`logits_and_attention`, so the attention maps are those of the real forward."""
        c = self.config
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (c.channels, c.image_size,
                                                            c.image_size):
            raise ValueError(f"expected images (batch, {c.channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(pixels.shape)}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return self.dropout(x + self.position(x.shape[1]))

    def hidden(self, pixels: Tensor) -> Tensor:
        """Final (normalised) states (batch, 1 + num_patches, d_model); [CLS] at position 0."""
        x, _ = self.encoder(self.encoder_input(pixels))
        return x

    def logits_and_attention(self, pixels: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, weights)``: the logits and every layer's self-attention weights, layer 0
        first, each (batch, heads, 1 + num_patches, 1 + num_patches) with rows summing to 1;
        row 0 is what [CLS] -- the position the classifier reads -- attends to.

        The encoder's ``need_weights`` path computes them (an explicit softmax(QK^T/sqrt(d))V
        instead of the fused kernel, which never materialises them), so the logits equal
        :meth:`logits` up to float rounding. It runs in eval mode, restored afterwards:
        dropout would perturb the embeddings and residuals the maps are read from."""
        was_training = self.training
        self.eval()
        try:
            x, weights = self.encoder(self.encoder_input(pixels), need_weights=True)
        finally:
            self.train(was_training)
        return self.classifier(x[:, 0]), cast(list[Tensor], weights)

    def attention_weights(self, pixels: Tensor) -> list[Tensor]:
        """Every layer's self-attention weights; see :meth:`logits_and_attention`."""
        return self.logits_and_attention(pixels)[1]

    def logits(self, pixels: Tensor) -> Tensor:
        return self.classifier(self.hidden(pixels)[:, 0])

    def forward(self, batch: ImageBatch) -> EncoderOutput:
        hidden = self.hidden(batch.pixels)
        logits = self.classifier(hidden[:, 0])
        loss = encoder_loss("classify", logits, batch.labels)
        return EncoderOutput(loss, loss.detach(), logits, hidden, len(batch))

    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> ViT:
        """A local Hugging Face ``ViTForImageClassification`` directory as a seqformer ViT."""
        from seqformer.interop import hf_vit

        return hf_vit.load(path, trust_pickle)


def read_vit_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a ViT run without ``family`` (a CheckpointError for another one)."""
    return ViT.read_config(directory)
