"""Recurrent encoder-decoders: the models Transformers replaced, as baselines on the same seams.

Encoder: embeddings -> ``torch.nn.RNN | LSTM | GRU`` (uni- or bidirectional, run on a packed
sequence so padding never enters the recurrence), or a convolutional encoder
(:class:`~seqformer.nn.conv.ConvEncoder`). The decoder starts from a *summary* of the source (the
top layer's final states, or a masked mean for the CNN) through a linear "bridge", then:

- ``attention: none``: the summary is all the decoder ever sees of the source (Sutskever et
  al., 2014). Teacher forcing is one cuDNN call over the whole target.
- ``attention: bahdanau`` (additive, Bahdanau et al., 2015): the previous decoder state queries
  the source; the context joins the next input token.
- ``attention: luong`` (``score: general | dot``, Luong et al., 2015): the new decoder state
  queries the source, and the attentional output ``tanh(W [h; c])`` is fed back with the next
  token ("input feeding"), so the decoder knows where it looked last.

With attention, teacher forcing runs :meth:`RNNSeq2Seq._advance` once per target position -- the
very function ``step`` runs at decoding time -- which is why cached decoding equals training.
The model offers Seq2Seq's surface (``forward``, ``encode``, ``decode``, ``start``, ``step``,
``save``/``load``) so the trainer, :mod:`seqformer.decoding.search`, the Transducer and the
attention charts use it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqformer.config import from_dict, to_dict
from seqformer.errors import ConfigError, UserError
from seqformer.models.common import family_config, load_weights_into, save_model_dir
from seqformer.models.seq2seq import BOS_ID, EOS_ID, PAD_ID, Seq2SeqOutput
from seqformer.nn.recurrent import SCORES, make_attention
from seqformer.training.loss import label_smoothed_cross_entropy

KINDS = ("rnn", "lstm", "gru")
ATTENTIONS = ("none", "bahdanau", "luong")
ENCODERS = ("rnn", "cnn")
RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

Hidden = Tensor | tuple[Tensor, Tensor]  # (layers, batch, hidden); LSTM: (h, c)


@dataclass(frozen=True)
class RNNSeq2SeqConfig:
    """Shape of a recurrent encoder-decoder.

    ``hidden_size`` is the size of the encoder output *and* of the decoder state: a
    bidirectional encoder gives each direction half of it, so Luong ``dot`` scores always
    compare vectors of one size. ``attention: luong-dot`` / ``luong-general`` are accepted as
    shorthands for ``attention: luong`` with ``score: dot`` / ``general``. ``kernel_size`` and
    ``encoder_layers`` shape the CNN encoder (``encoder: cnn``): a deep convolutional encoder
    need not come with a deep decoder.
    """

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    kind: str = "lstm"
    attention: str = "bahdanau"
    score: str = "general"
    encoder: str = "rnn"
    embed_dim: int = 128
    hidden_size: int = 256
    layers: int = 1
    encoder_layers: int | None = None  # default: ``layers`` (the decoder always has ``layers``)
    bidirectional: bool = True
    kernel_size: int = 3
    dropout: float = 0.1
    max_len: int = 256
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.attention in ("luong-dot", "luong-general"):
            object.__setattr__(self, "score", self.attention.split("-")[1])
            object.__setattr__(self, "attention", "luong")
        choices = (("kind", KINDS), ("attention", ATTENTIONS + ("luong-dot", "luong-general")),
                   ("score", SCORES), ("encoder", ENCODERS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name}={getattr(self, name)!r}; use one of "
                                  f"{', '.join(allowed)}")
        for name in ("embed_dim", "hidden_size", "layers", "max_len", "kernel_size",
                     "encoder_layers"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.bidirectional and self.encoder == "rnn" and self.hidden_size % 2:
            raise ConfigError(f"model.hidden_size={self.hidden_size} must be even with "
                              "model.bidirectional: true (each direction gets half)")
        if self.encoder == "cnn" and self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size={self.kernel_size} must be odd (centred "
                              "convolutions keep the source length)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing must be in [0, 1)")

    # What the task's log line and the Transducer read from any seq2seq config.
    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def n_encoder_layers(self) -> int:
        return self.layers if self.encoder_layers is None else self.encoder_layers

    @property
    def n_decoder_layers(self) -> int:
        return self.layers


@dataclass
class RNNState:
    """What decoding carries between steps; ``select`` reorders it for beam search."""

    memory: Tensor  # (batch, src, hidden): attention values
    keys: Tensor | None  # (batch, src, dim): attention keys, projected once in ``start``
    memory_padding_mask: Tensor | None  # (batch, src), True at padding
    hidden: Hidden
    feed: Tensor | None  # (batch, hidden): Luong's previous attentional output
    step: int = 0
    extras: dict = field(default_factory=dict)

    def select(self, indices: Tensor) -> RNNState:
        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.index_select(0, indices)

        return RNNState(self.memory.index_select(0, indices), rows(self.keys),
                        rows(self.memory_padding_mask), self._hidden_rows(indices),
                        rows(self.feed), self.step, self.extras)

    def select_beams(self, indices: Tensor) -> RNNState:
        """``select`` for beam search's per-step reordering, where every index stays inside its
        sentence's group of beams: memory, keys and mask are identical across a group, so only
        the recurrent state (and Luong's fed-back output) is copied."""
        feed = None if self.feed is None else self.feed.index_select(0, indices)
        return RNNState(self.memory, self.keys, self.memory_padding_mask,
                        self._hidden_rows(indices), feed, self.step, self.extras)

    def _hidden_rows(self, indices: Tensor) -> Hidden:
        """The recurrent state keeps the batch in dim 1: (layers, batch, hidden)."""
        if isinstance(self.hidden, tuple):
            h, c = self.hidden
            return h.index_select(1, indices), c.index_select(1, indices)
        return self.hidden.index_select(1, indices)


class RNNSeq2Seq(nn.Module):
    """Embeddings -> recurrent (or convolutional) encoder -> bridge -> recurrent decoder."""

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def __init__(self, config: RNNSeq2SeqConfig) -> None:
        super().__init__()
        if config.src_vocab_size <= 4 or config.tgt_vocab_size <= 4:
            raise ConfigError("RNNSeq2SeqConfig needs src_vocab_size and tgt_vocab_size from "
                              "the tokenizers (both > 4)")
        self.config = c = config
        rnn_cls = RNN_CLASSES[c.kind]

        def between(layers: int) -> float:  # torch warns about dropout on a single layer
            return c.dropout if layers > 1 else 0.0

        self.src_embed = nn.Embedding(c.src_vocab_size, c.embed_dim, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(c.dropout)
        if c.encoder == "rnn":
            directions = 2 if c.bidirectional else 1
            self.encoder = rnn_cls(c.embed_dim, c.hidden_size // directions, c.n_encoder_layers,
                                   batch_first=True, dropout=between(c.n_encoder_layers),
                                   bidirectional=c.bidirectional)
        else:
            from seqformer.nn.conv import ConvEncoder

            self.encoder = ConvEncoder(c.embed_dim, c.hidden_size, c.n_encoder_layers,
                                       c.kernel_size, c.dropout, c.max_len)
        n_states = 2 if c.kind == "lstm" else 1  # LSTM: the cell state is bridged too
        self.bridge = nn.Linear(c.hidden_size, n_states * c.layers * c.hidden_size)
        feeds_context = c.attention != "none"  # Bahdanau: context; Luong: attentional output
        self.decoder = rnn_cls(c.embed_dim + (c.hidden_size if feeds_context else 0),
                               c.hidden_size, c.layers, batch_first=True,
                               dropout=between(c.layers))
        if c.attention != "none":
            self.attention = make_attention(c.attention, c.hidden_size, c.hidden_size, c.score)
            self.combine = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=False)
        self.output = nn.Linear(c.hidden_size, c.tgt_vocab_size)
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=c.embed_dim ** -0.5)
            with torch.no_grad():
                emb.weight[PAD_ID].zero_()

    # -- encoder -----------------------------------------------------------------------------------
    def encode(self, src: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None, list]:
        """``src`` (batch, src_len) -> memory (batch, src_len, hidden), padding mask, [].

        The list of encoder self-attention weights is empty: recurrence has none.
        """
        if src.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of length {src.shape[1]} exceeds model.max_len="
                             f"{self.config.max_len}")
        padding = src.eq(PAD_ID)
        mask = padding if bool(padding.any()) else None
        x = self.dropout(self.src_embed(src))
        if self.config.encoder == "cnn":
            return self.encoder(x, mask), mask, []
        # Packing makes the backward direction start at each row's last real token; lengths
        # must live on the CPU for cuDNN. An all-padding row still gets one step.
        lengths = (~padding).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        return memory, mask, []

    def summary(self, memory: Tensor, mask: Tensor | None) -> Tensor:
        """One vector per source (batch, hidden): what the decoder is initialised from.

        For a recurrent encoder it is the top layer's final state -- the forward direction at
        the last real token, the backward direction at the first -- read back from ``memory``
        so that ``decode`` needs nothing but the memory and mask. The CNN has no final state:
        its summary is the mean over real positions.
        """
        if self.config.encoder == "cnn":
            if mask is None:
                return memory.mean(1)
            keep = (~mask).unsqueeze(-1).to(memory.dtype)
            return (memory * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        batch, src_len, size = memory.shape
        last = (src_len - 1 if mask is None else (~mask).sum(1) - 1)
        last = torch.as_tensor(last, device=memory.device).clamp(min=0).expand(batch)
        final = memory[torch.arange(batch, device=memory.device), last]
        if not self.config.bidirectional:
            return final
        half = size // 2
        return torch.cat([final[:, :half], memory[:, 0, half:]], dim=-1)

    # -- decoder -----------------------------------------------------------------------------------
    def initial_state(self, memory: Tensor, mask: Tensor | None) -> RNNState:
        c = self.config
        bridged = self.bridge(self.summary(memory, mask)).tanh()
        states = bridged.view(memory.shape[0], -1, c.layers, c.hidden_size).permute(1, 2, 0, 3)
        hidden: Hidden = ((states[0].contiguous(), states[1].contiguous()) if c.kind == "lstm"
                          else states[0].contiguous())
        keys = self.attention.prepare(memory) if c.attention != "none" else None
        feed = memory.new_zeros(memory.shape[0], c.hidden_size) if c.attention == "luong" else None
        return RNNState(memory, keys, mask, hidden, feed)

    def _advance(self, embedded: Tensor, state: RNNState) -> tuple[Tensor, Tensor | None]:
        """One decoder step for ``embedded`` (batch, embed_dim), updating ``state`` in place.

        Returns the output vector (batch, hidden) fed to the vocabulary projection and the
        cross-attention weights (batch, src), or None without attention.
        """
        attention = self.config.attention
        context = weights = None
        if attention == "bahdanau":  # the query is the state *before* this step
            top = state.hidden[0][-1] if isinstance(state.hidden, tuple) else state.hidden[-1]
            context, weights = self.attention(top, state.keys, state.memory,
                                              state.memory_padding_mask)
            x = torch.cat([embedded, context], dim=-1)
        elif attention == "luong":
            x = torch.cat([embedded, state.feed], dim=-1)
        else:
            x = embedded
        y, state.hidden = self.decoder(x.unsqueeze(1), state.hidden)
        y = y[:, 0]
        if attention == "none":
            return y, None
        if attention == "luong":  # the query is the state *after* this step
            context, weights = self.attention(y, state.keys, state.memory,
                                              state.memory_padding_mask)
        out = self.combine(torch.cat([y, context], dim=-1)).tanh()
        if attention == "luong":
            state.feed = out
        return out, weights

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_padding_mask: Tensor | None,
               need_weights: bool = False) -> tuple[Tensor, list]:
        """Teacher-forced decoder pass -> logits (batch, tgt_len, vocab) and attention weights.

        ``need_weights`` gives Seq2Seq's per-layer ``(self, cross)`` pairs for the charts: one
        "layer" whose cross-attention has one head, and an empty (zero-head) self-attention.
        """
        if need_weights and self.config.attention == "none":
            raise UserError("this model has model.attention: none, so there is no attention "
                            "to chart; train one with bahdanau or luong attention")
        embedded = self.dropout(self.tgt_embed(tgt_in))  # (batch, tgt, embed)
        state = self.initial_state(memory, memory_padding_mask)
        weights: list[Tensor] = []
        if self.config.attention == "none":  # nothing depends on the step: one fused call
            outputs, _ = self.decoder(embedded, state.hidden)
        else:
            steps = []
            for t in range(tgt_in.shape[1]):
                out, w = self._advance(embedded[:, t], state)
                steps.append(out)
                weights.append(w)
            outputs = torch.stack(steps, dim=1)
        logits = self.output(self.dropout(outputs))
        if not need_weights:
            return logits, []
        cross = torch.stack(weights, dim=1).unsqueeze(1)  # (batch, 1 head, tgt, src)
        no_self = cross.new_zeros(tgt_in.shape[0], 0, tgt_in.shape[1], tgt_in.shape[1])
        return logits, [(no_self, cross)]

    def forward(self, batch) -> Seq2SeqOutput:
        memory, mask, _ = self.encode(batch.src)
        logits, _ = self.decode(batch.tgt_in, memory, mask)
        loss, nll, n_tokens = label_smoothed_cross_entropy(
            logits.float(), batch.tgt_out, self.config.label_smoothing, PAD_ID)
        return Seq2SeqOutput(loss, nll, logits, n_tokens)

    # -- incremental decoding --------------------------------------------------------------------
    def start(self, src: Tensor) -> RNNState:
        memory, mask, _ = self.encode(src)
        return self.initial_state(memory, mask)

    def step(self, tokens: Tensor, state: RNNState,
             need_weights: bool = False) -> tuple[Tensor, RNNState]:
        """Feed one token per hypothesis (batch,) -> log-probs (batch, vocab) of the next one."""
        out, weights = self._advance(self.dropout(self.tgt_embed(tokens.view(-1))), state)
        if need_weights:
            state.extras["weights"] = weights
        state.step += 1
        logits = self.output(self.dropout(out)).float()
        return logits.log_softmax(dim=-1), state

    # -- persistence -----------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` (``family: rnn``) and ``model.safetensors`` into ``directory``."""
        save_model_dir(self, config_json(self.config), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> RNNSeq2Seq:
        config = family_config(directory, "rnn", "a recurrent encoder-decoder")
        model = cls(from_dict(RNNSeq2SeqConfig, config, f"{directory}/config.json"))
        return load_weights_into(model, directory, map_location)


def config_json(config: RNNSeq2SeqConfig) -> dict:
    """The ``config.json`` content; ``family`` tells loaders which model class to build."""
    return {"family": "rnn", **to_dict(config)}
