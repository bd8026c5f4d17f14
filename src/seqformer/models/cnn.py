"""A 1D convolutional sequence classifier (Kim, 2014): the pre-Transformer baseline for
sentence classification.

Embeddings are the input channels; convolutions of several widths act as learned n-gram
detectors, and max-over-time pooling keeps each detector's strongest match anywhere in the
sequence, so the prediction does not depend on length or position. It takes the same
:class:`~seqformer.models.bert.EncoderBatch` (``labels`` of shape (batch,)) and returns the same
:class:`~seqformer.models.bert.EncoderOutput` as BERT's classify head, so a classification task
and the Trainer can use either model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.errors import ConfigError
from seqformer.models.bert import EncoderBatch, EncoderOutput, encoder_loss
from seqformer.models.common import family_config, load_weights_into, save_model_dir
from seqformer.models.pretrained_embeddings import check_embedding_fields, copy_vectors
from seqformer.models.seq2seq import PAD_ID
from seqformer.nn.conv import MultiWidthConv


@dataclass(frozen=True)
class CNNClassifierConfig:
    """``channels`` filters per width in ``kernel_sizes``; Kim's defaults (100 x [3, 4, 5],
    dropout 0.5 on the pooled features)."""

    vocab_size: int = 0
    num_labels: int = 2
    embed_dim: int = 128
    channels: int = 100
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])
    dropout: float = 0.5
    max_len: int = 512
    embeddings: str | None = None  # word2vec text file that initialised the embeddings
    embeddings_mode: str = "tuned"  # tuned | static | multichannel (Kim's variants)

    def __post_init__(self) -> None:
        check_embedding_fields(self.embeddings, self.embeddings_mode, multichannel_ok=True)
        for name in ("embed_dim", "channels", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")
        if not self.kernel_sizes or any(k <= 0 for k in self.kernel_sizes):
            raise ConfigError(f"model.kernel_sizes must be a non-empty list of positive widths, "
                              f"got {self.kernel_sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")


class CNNClassifier(nn.Module):
    """Embeddings -> multi-width Conv1d -> ReLU -> max over time -> dropout -> linear."""

    def __init__(self, config: CNNClassifierConfig, labels: list[str] | None = None) -> None:
        super().__init__()
        if config.vocab_size <= 4:
            raise ConfigError("CNNClassifierConfig needs vocab_size from the tokenizer (> 4)")
        if labels is not None and len(labels) != config.num_labels:
            raise ConfigError(f"{len(labels)} label names for model.num_labels="
                              f"{config.num_labels}")
        self.config = c = config
        self.labels = list(labels or [])
        self.head_kind = "classify"  # what the encoder tasks read to collate, score and report
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_ID)
        # Kim's multichannel CNN: a second, static copy of the vectors as more input channels.
        self.embed_static = (nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_ID)
                             if c.embeddings_mode == "multichannel" else None)
        if self.embed_static is not None:
            self.embed_static.weight.requires_grad_(False)
        if c.embeddings_mode == "static":
            self.embed.weight.requires_grad_(False)
        channels = 2 * c.embed_dim if self.embed_static is not None else c.embed_dim
        self.features = MultiWidthConv(channels, c.channels, c.kernel_sizes)
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(self.features.out_dim, c.num_labels)

    def logits(self, input_ids: Tensor) -> Tensor:
        """(batch, time) token ids -> (batch, num_labels)."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of length {input_ids.shape[1]} exceeds model.max_len="
                             f"{self.config.max_len}")
        padding = input_ids.eq(PAD_ID)
        x = self.embed(input_ids)
        if self.embed_static is not None:
            x = torch.cat([x, self.embed_static(input_ids)], dim=-1)
        pooled = self.features(x, padding if bool(padding.any()) else None)
        return self.classifier(self.dropout(pooled))

    def forward(self, batch: EncoderBatch) -> EncoderOutput:
        logits = self.logits(batch.input_ids)
        loss = encoder_loss("classify", logits, batch.labels)
        # No per-token states: ``hidden`` is the empty (batch, 0) tensor.
        return EncoderOutput(loss, loss.detach(), logits, logits.new_zeros(len(logits), 0),
                             batch.n_tgt_tokens)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_embeddings(self, tokens: list[str], vectors) -> int:
        """Initialise the embedding table(s) from word vectors (``tokens[i]`` is id i's
        string); returns how many tokens the vectors had."""
        found = copy_vectors(self.embed.weight, tokens, vectors)
        if self.embed_static is not None:
            self.embed_static.weight.data.copy_(self.embed.weight.data)
        return found

    def config_json(self) -> dict[str, Any]:
        return config_json(self.config, self.labels)

    def save(self, directory: str | Path) -> None:
        """``config.json`` (``family: cnn``, with the label names) and ``model.safetensors``."""
        save_model_dir(self, self.config_json(), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> CNNClassifier:
        data = family_config(directory, "cnn", "a CNN classifier")
        labels = [str(x) for x in data.pop("labels", [])] or None
        model = cls(from_dict(CNNClassifierConfig, data, f"{directory}/config.json"), labels)
        return load_weights_into(model, directory, map_location)

    @torch.no_grad()
    def predict(self, input_ids: Tensor) -> Tensor:
        """The most likely label index of each row (batch,)."""
        return self.logits(input_ids).argmax(-1)


def config_json(config: CNNClassifierConfig, labels: list[str]) -> dict[str, Any]:
    return {"family": "cnn", **to_dict(config), "labels": list(labels)}
