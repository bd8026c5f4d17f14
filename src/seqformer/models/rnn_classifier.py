"""A recurrent sequence classifier (many-to-one) or tagger (many-to-many): the RNN / LSTM / GRU
baseline for sentence classification beside Kim's CNN (``models/cnn.py``) and BERT, and for
token tagging beside BERT's tag head (``task: tag``: a label per token from its states).

Embeddings run through a (by default bidirectional) recurrent stack; the states are pooled
into one vector -- ``max`` or ``mean`` over the real positions, or ``last``: the final state
of each direction, the classic many-to-one readout, which must carry the whole sentence
through every step (the bottleneck card 001 and 002 describe, and why pooling usually wins).
Padding never reaches the recurrence: sequences are packed by length. It takes the same
:class:`~seqformer.models.bert.EncoderBatch` and returns the same
:class:`~seqformer.models.bert.EncoderOutput` as the CNN and BERT's classify head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqformer.config import from_dict, to_dict
from seqformer.errors import ConfigError
from seqformer.models.bert import EncoderBatch, EncoderOutput, encoder_loss
from seqformer.models.common import family_config, load_weights_into, save_model_dir
from seqformer.models.pretrained_embeddings import check_embedding_fields, copy_vectors
from seqformer.models.seq2seq import PAD_ID

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLING = ("max", "mean", "last")
FAMILY = "rnn-classify"


@dataclass(frozen=True)
class RNNClassifierConfig:
    """``cell`` (rnn / lstm / gru: the recipe's ``model.kind``), ``layers`` of ``hidden_size``
    per direction; dropout between layers and on the pooled vector."""

    vocab_size: int = 0
    num_labels: int = 2
    cell: str = "lstm"
    task: str = "classify"  # or "tag": a label per token from its states (many-to-many)
    embed_dim: int = 128
    hidden_size: int = 128
    layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"
    dropout: float = 0.5
    max_len: int = 512
    embeddings: str | None = None  # word2vec text file that initialised the embeddings
    embeddings_mode: str = "tuned"  # tuned | static

    def __post_init__(self) -> None:
        check_embedding_fields(self.embeddings, self.embeddings_mode, multichannel_ok=False)
        if self.cell not in CELLS:
            raise ConfigError(f"model.kind={self.cell!r}; use one of {', '.join(CELLS)}")
        if self.task not in ("classify", "tag"):
            raise ConfigError(f"a recurrent encoder does task: classify or tag, not {self.task}")
        if self.pooling not in POOLING:
            raise ConfigError(f"model.pooling={self.pooling!r}; use one of {', '.join(POOLING)}")
        for name in ("embed_dim", "hidden_size", "layers", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")


class RNNClassifier(nn.Module):
    """Embeddings -> packed (bi)RNN / LSTM / GRU -> pooled states -> dropout -> linear."""

    def __init__(self, config: RNNClassifierConfig, labels: list[str] | None = None) -> None:
        super().__init__()
        if config.vocab_size <= 4:
            raise ConfigError("RNNClassifierConfig needs vocab_size from the tokenizer (> 4)")
        if labels is not None and len(labels) != config.num_labels:
            raise ConfigError(f"{len(labels)} label names for model.num_labels="
                              f"{config.num_labels}")
        self.config = c = config
        self.labels = list(labels or [])
        self.head_kind = c.task  # what the encoder tasks read to collate, score and report
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_ID)
        if c.embeddings_mode == "static":
            self.embed.weight.requires_grad_(False)
        self.rnn = CELLS[c.cell](c.embed_dim, c.hidden_size, num_layers=c.layers,
                                 batch_first=True, bidirectional=c.bidirectional,
                                 dropout=c.dropout if c.layers > 1 else 0.0)
        self.dropout = nn.Dropout(c.dropout)
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.classifier = nn.Linear(width, c.num_labels)

    def _run(self, input_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Packed recurrence -> states (batch, time, hidden x directions) with zeros at
        padding, the final hidden state(s), and the real-token mask."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of length {input_ids.shape[1]} exceeds model.max_len="
                             f"{self.config.max_len}")
        real = input_ids.ne(PAD_ID)
        lengths = real.sum(1).clamp(min=1).cpu()  # pack_padded_sequence wants them on the CPU
        packed = pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        states, last = self.rnn(packed)
        states, _ = pad_packed_sequence(states, batch_first=True,
                                        total_length=input_ids.shape[1])
        return states, last[0] if isinstance(last, tuple) else last, real  # LSTM: (h, c)

    def pooled(self, input_ids: Tensor) -> Tensor:
        """(batch, time) ids -> (batch, hidden x directions) sentence vectors."""
        states, h, real = self._run(input_ids)
        if self.config.pooling == "last":
            directions = 2 if self.config.bidirectional else 1
            return torch.cat(list(h[-directions:]), dim=-1)  # the top layer's directions
        mask = real.unsqueeze(-1)
        if self.config.pooling == "max":
            return states.masked_fill(~mask, float("-inf")).amax(1)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)

    def logits(self, input_ids: Tensor) -> Tensor:
        """(batch, time) token ids -> (batch, num_labels), or (batch, time, num_labels) for a
        tagger."""
        if self.config.task == "tag":
            return self.classifier(self.dropout(self._run(input_ids)[0]))
        return self.classifier(self.dropout(self.pooled(input_ids)))

    def forward(self, batch: EncoderBatch) -> EncoderOutput:
        logits = self.logits(batch.input_ids)
        loss = encoder_loss(self.config.task, logits, batch.labels)
        # No per-token states are exposed: ``hidden`` is the empty (batch, 0) tensor.
        return EncoderOutput(loss, loss.detach(), logits, logits.new_zeros(len(logits), 0),
                             batch.n_tgt_tokens)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_embeddings(self, tokens: list[str], vectors) -> int:
        """Initialise the embeddings from word vectors (``tokens[i]`` is id i's string);
        returns how many tokens the vectors had."""
        return copy_vectors(self.embed.weight, tokens, vectors)

    def config_json(self) -> dict[str, Any]:
        return {"family": FAMILY, **to_dict(self.config), "labels": list(self.labels)}

    def save(self, directory: str | Path) -> None:
        """``config.json`` (``family: rnn-classify``, with the label names) and weights."""
        save_model_dir(self, self.config_json(), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> RNNClassifier:
        data = family_config(directory, FAMILY, "a recurrent classifier")
        labels = [str(x) for x in data.pop("labels", [])] or None
        model = cls(from_dict(RNNClassifierConfig, data, f"{directory}/config.json"), labels)
        return load_weights_into(model, directory, map_location)
