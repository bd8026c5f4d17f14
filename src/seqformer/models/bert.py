"""The bidirectional Transformer encoder (BERT; Devlin et al., 2019) and a model = encoder + head.

The stack is the shared ``nn.layers.Encoder`` in post-LN arrangement with LayerNorm eps 1e-12
and exact GELU, which is what BERT checkpoints were trained with; embeddings are word + learned
position + token type (segment A/B), then LayerNorm and dropout. Every token sees every other
non-padding token, so the model suits understanding tasks (classification, tagging, span QA)
rather than generation. Heads live in :mod:`seqformer.models.heads`.

Token ids follow the project's fixed specials, read as BERT's: pad=0, [CLS]=1 (bos), [SEP]=2
(eos), unk=3, and a WordPiece vocabulary adds [MASK]=4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.data.device import to_device
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.common import (
    check_block_fields,
    load_weights_into,
    save_model_dir,
)
from seqformer.models.heads import (
    HEAD_KINDS,
    MLMHead,
    SequenceClassificationHead,
    SpanHead,
    TokenClassificationHead,
)
from seqformer.nn.layers import Encoder
from seqformer.nn.positional import LearnedPositionalEmbedding

PAD_ID, CLS_ID, SEP_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 4
IGNORE = -100  # label of positions that are not scored (torch's cross_entropy default)
LAYER_COMBINE = ("concat", "sum", "mean")  # how BERTModel.token_states joins several layers


@dataclass(frozen=True)
class BERTConfig:
    """Shape of the encoder; ``vocab_size`` comes from the tokenizer, the rest from the recipe.

    Defaults are BERT's (post-LN, GELU, eps 1e-12, dropout 0.1 everywhere) at a CPU-friendly
    size; ``norm_first`` exists only so the shared block checks apply, BERT is post-LN.
    """

    vocab_size: int = 0
    type_vocab_size: int = 2
    d_model: int = 256
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 1024
    max_len: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    norm_eps: float = 1e-12
    norm_first: bool = False
    positional: str = "learned"

    def __post_init__(self) -> None:
        check_block_fields(self)
        if self.positional != "learned":
            raise ConfigError("model.positional: BERT uses learned positions; drop the field")
        if self.type_vocab_size < 1:
            raise ConfigError(f"model.type_vocab_size must be >= 1, got {self.type_vocab_size}")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"model.norm_eps must be in (0, 1), got {self.norm_eps}")


@dataclass
class EncoderBatch:
    """Inputs of every encoder task; ``labels`` depend on the head:

    mlm / tag: (batch, time) with IGNORE where unscored; classify: (batch,);
    qa: (batch, 2) start and end token positions.
    """

    input_ids: Tensor
    token_type_ids: Tensor
    labels: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # not moved: ids, offsets for metrics

    def to(self, device: torch.device | str) -> EncoderBatch:
        return EncoderBatch(to_device(self.input_ids, device),
                            to_device(self.token_type_ids, device),
                            to_device(self.labels, device), self.extra)

    @property
    def padding_mask(self) -> Tensor:
        return self.input_ids.eq(PAD_ID)

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.input_ids.ne(PAD_ID).sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class EncoderOutput:
    loss: Tensor
    nll: Tensor
    logits: Tensor
    hidden: Tensor
    n_tokens: int


class BERTEmbeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout (BERT's embedding block)."""

    def __init__(self, c: BERTConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.d_model, padding_idx=PAD_ID)
        self.position = LearnedPositionalEmbedding(c.d_model, c.max_len)
        self.token_type = nn.Embedding(c.type_vocab_size, c.d_model)
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word(input_ids) + self.position(input_ids.shape[1])
             + self.token_type(token_type_ids))
        return self.dropout(self.norm(x))


class BERT(nn.Module):
    """Embeddings -> N post-LN encoder layers; returns the final hidden states."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        if config.vocab_size <= 4:
            raise ConfigError("BERTConfig needs vocab_size from the tokenizer (> 4)")
        self.config = c = config
        self.embeddings = BERTEmbeddings(c)
        self.encoder = Encoder(c.layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=c.norm_first,
                               norm_eps=c.norm_eps)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                padding_mask: Tensor | None = None,
                all_hidden: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Hidden states (batch, time, d_model); padding (PAD_ID) is masked as keys unless a
        ``padding_mask`` is given. ``all_hidden`` also returns the embedding output and every
        layer's output (for distillation), like HF's ``hidden_states``."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of length {input_ids.shape[1]} exceeds "
                             f"model.max_len={self.config.max_len}")
        if padding_mask is None:
            padding_mask = input_ids.eq(PAD_ID)
        if not bool(padding_mask.any()):
            padding_mask = None  # lets attention take the unmasked fused kernel
        x = self.embeddings(input_ids, token_type_ids)
        states = [x]
        for layer in self.encoder.layers:
            x, _ = layer(x, padding_mask)
            states.append(x)
        x = self.encoder.norm(x)
        return (x, states) if all_hidden else x


def init_bert_weights(module: nn.Module) -> None:
    """BERT's init: N(0, 0.02) for matrices and embeddings, zero biases, unit LayerNorms.
    Modules are visited in a fixed order, so the same seed gives the same model."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=0.02)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def make_head(kind: str, config: BERTConfig, num_labels: int,
              word_embeddings: nn.Embedding) -> nn.Module:
    if kind == "mlm":
        return MLMHead(config.d_model, config.vocab_size, word_embeddings, config.activation,
                       config.norm_eps)
    if kind in ("classify", "tag") and num_labels < 2:
        raise ConfigError(f"a {kind} head needs at least 2 labels, got {num_labels}")
    if kind == "classify":
        return SequenceClassificationHead(config.d_model, num_labels, config.dropout)
    if kind == "tag":
        return TokenClassificationHead(config.d_model, num_labels, config.dropout)
    if kind == "qa":
        return SpanHead(config.d_model)
    if kind == "none":  # an imported bare encoder (BertModel): hidden states are the output
        return nn.Identity()
    raise ConfigError(f"unknown head {kind!r}; use one of {', '.join(HEAD_KINDS)}")


class BERTModel(nn.Module):
    """An encoder with one head; ``model(batch).loss`` is what the Trainer optimises.

    ``labels`` names the classes of a classify/tag head, stored in config.json so predictions
    can be printed as names.
    """

    def __init__(self, config: BERTConfig, head: str = "mlm",
                 labels: list[str] | None = None) -> None:
        super().__init__()
        self.config, self.head_kind = config, head
        self.labels = list(labels or [])
        self.bert = BERT(config)
        self.head = make_head(head, config, len(self.labels), self.bert.embeddings.word)
        init_bert_weights(self)

    def logits(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        return self.head(self.bert(input_ids, token_type_ids))

    def forward(self, batch: EncoderBatch) -> EncoderOutput:
        """Loss of ``batch``. For MLM with labels, ``logits`` are (masked positions, vocab) in
        row-major order, ``labels[labels != IGNORE]``: the vocabulary projection is the
        costliest matrix multiply and only ~15% of positions are scored, so the head runs on
        those alone (as Google's BERT code does)."""
        hidden = self.bert(batch.input_ids, batch.token_type_ids)
        if self.head_kind == "mlm" and batch.labels is not None:
            scored = batch.labels.ne(IGNORE)
            logits = self.head(hidden[scored])
            loss = encoder_loss("mlm", logits, batch.labels[scored])
        else:
            logits = self.head(hidden)
            loss = encoder_loss(self.head_kind, logits, batch.labels)
        return EncoderOutput(loss, loss.detach(), logits, hidden, batch.n_tgt_tokens)

    @torch.no_grad()
    def token_states(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                     layers: Sequence[int] | None = None, combine: str = "concat") -> Tensor:
        """Per-token features (batch, time, dim): the final states, or ``layers`` combined.

        BERT's feature-based use (Devlin et al. 2019, section 5.3): a frozen model's hidden
        states fed to another model, where concatenating the last four layers did best on NER,
        nearly as well as fine-tuning. ``layers``: 0 is the embedding output, 1..L the layers,
        negative counts from the top (-1 is the final states as the model outputs them, after
        the last LayerNorm of a pre-LN stack); several are concatenated (dim = n x d_model),
        summed or averaged (``combine``).
        """
        if not layers:
            return self.bert(input_ids, token_type_ids)
        if combine not in LAYER_COMBINE:
            raise ConfigError(f"combine={combine!r}; use one of {', '.join(LAYER_COMBINE)}")
        final, states = self.bert(input_ids, token_type_ids, all_hidden=True)
        states[-1] = final
        top = len(states) - 1
        picked = []
        for i in layers:
            if not -top - 1 <= i <= top:
                raise ConfigError(f"layer {i} does not exist: this model has layers 0 "
                                  f"(embeddings) to {top}, or -1 to {-top - 1} from the top")
            picked.append(states[i])
        if combine == "concat":
            return torch.cat(picked, dim=-1)
        total = torch.stack(picked).sum(0)
        return total / len(picked) if combine == "mean" else total

    @torch.no_grad()
    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
              pooling: str = "mean", layers: Sequence[int] | None = None,
              combine: str = "concat") -> Tensor:
        """Sentence embeddings (batch, dim): the mean of the non-padding token states, or the
        [CLS] state, of the final layer or of ``layers`` (see :meth:`token_states`). Mean
        pooling is the better default without a fine-tuned [CLS] (Reimers & Gurevych, 2019)."""
        hidden = self.token_states(input_ids, token_type_ids, layers, combine)
        if pooling == "cls":
            return hidden[:, 0]
        if pooling != "mean":
            raise ConfigError(f"pooling={pooling!r}; use 'mean' or 'cls'")
        keep = input_ids.ne(PAD_ID).unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence -----------------------------------------------------------------------------
    def config_json(self) -> dict[str, Any]:
        return config_json(self.config, self.head_kind, self.labels)

    def save(self, directory: str | Path) -> None:
        save_model_dir(self, self.config_json(), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> BERTModel:
        config, head, labels = read_bert_config(directory)
        return load_weights_into(cls(config, head, labels), directory, map_location)


    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> BERTModel:
        """The encoder of the local Hugging Face BERT directory ``path``, its vocabulary
        renumbered (see :mod:`seqformer.interop.hf_bert_io`; ``seqformer import`` also writes
        the matching tokenizer)."""
        from seqformer.interop import hf_bert_io

        return hf_bert_io.load(path, trust_pickle)[0]


def encoder_loss(kind: str, logits: Tensor, labels: Tensor | None) -> Tensor:
    """Mean cross-entropy over scored positions; 0 (with a zero gradient) when none is scored,
    so an all-ignored batch cannot put NaN into the optimizer."""
    if labels is None:
        return logits.new_zeros(())
    logits = logits.float()
    if kind == "qa":
        start, end = logits[..., 0], logits[..., 1]
        return (F.cross_entropy(start, labels[:, 0]) + F.cross_entropy(end, labels[:, 1])) / 2
    flat = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(flat.numel(), -1), flat, ignore_index=IGNORE,
                            reduction="sum")
    return total / flat.ne(IGNORE).sum().clamp(min=1)


def config_json(config: BERTConfig, head: str, labels: list[str]) -> dict[str, Any]:
    """``family`` tells loaders which class to build; ``head`` and ``labels`` which head."""
    return {"family": "bert", **to_dict(config), "head": head, "labels": list(labels)}


def read_bert_config(directory: str | Path) -> tuple[BERTConfig, str, list[str]]:
    from seqformer.models.seq2seq import read_model_config

    data = read_model_config(directory)
    family = data.pop("family", None)
    if family != "bert":
        raise CheckpointError(f"{directory}: a {family or 'seq2seq'} model, not a BERT encoder; "
                              "pass a run trained with task: mlm, classify, tag or qa")
    head = str(data.pop("head", "mlm"))
    labels = [str(x) for x in data.pop("labels", [])]
    return from_dict(BERTConfig, data, f"{directory}/config.json"), head, labels


FREEZE_PRESETS = ("none", "embeddings", "bottom:N", "all-but-head")


def freeze_patterns(preset: str, layers: int) -> list[str]:
    """Parameter-name patterns (for ``training.freezing``) of a fine-tuning freeze preset.

    ``none``: train everything; ``embeddings``: the embedding block (word, position, token
    type, its LayerNorm -- and the MLM decoder tied to the word table); ``bottom:N``: the
    embeddings and the N lowest encoder layers (lower layers hold the most general features);
    ``all-but-head``: the whole encoder, a linear probe of the pretrained features.
    """
    if preset == "none":
        return []
    if preset == "embeddings":
        return ["bert.embeddings.*"]
    if preset == "all-but-head":
        return ["bert.*"]
    if preset.startswith("bottom:"):
        count = preset.partition(":")[2]
        if not count.isdigit() or not 0 < int(count) <= max(layers, 1):
            raise ConfigError(f"freeze={preset!r}: N must be an integer from 1 to the number "
                              f"of layers ({layers})")
        return ["bert.embeddings.*", *(f"bert.encoder.layers.{i}.*" for i in range(int(count)))]
    raise ConfigError(f"freeze={preset!r}; use one of {', '.join(FREEZE_PRESETS)}")
