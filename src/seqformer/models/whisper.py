"""A Whisper-shaped speech-to-text encoder-decoder (Radford et al., 2022).

The layout is Hugging Face's ``WhisperForConditionalGeneration``, so its checkpoints map one to
one (``interop/hf_whisper.py``):

- encoder: log-mel features (batch, n_mels, frames) -> Conv1d(kernel 3) + GELU -> Conv1d(kernel
  3, stride 2) + GELU, which halves the frame rate (10 ms -> 20 ms per position); fixed
  sinusoidal positions (Whisper's own table: sines then cosines, timescales spaced over
  ``channels / 2 - 1`` steps, not Vaswani's); the shared pre-LN ``nn.layers.Encoder`` (GELU) with
  its final LayerNorm;
- decoder: token embedding (not scaled by sqrt(d)) + learned positions, the shared pre-LN
  ``nn.layers.Decoder`` (causal self-attention, cross-attention, GELU) with its final LayerNorm,
  and an output projection tied to the token embedding, without bias;
- no bias on any ``k_proj``: a key bias adds the same q.b to every score of a query, which the
  softmax cancels, so Whisper dropped it; the shared attention's k_proj is swapped for a
  bias-free Linear so the parameters (and checkpoints) are exactly Whisper's.

``encoder_block: conformer`` swaps the encoder layers for Conformer blocks
(``nn/conformer.py``: macaron FFNs, relative-position self-attention, a depthwise convolution of
``conv_kernel`` frames) and drops the absolute sinusoids (no ``encoder_positions`` buffer),
which relative positions replace -- the encoder most speech recognisers use since Gulati et al.
(2020). Hugging Face has no Whisper of that shape, so such a model neither imports nor exports.

Unlike real Whisper, inputs are not padded to 30 s: a batch is padded to its longest utterance
and ``lengths`` (frames per utterance) mark the rest. Padded frames are zero (the value the
convolutions pad with), conv1's output is zeroed past each length before conv2, and the
encoder's self-attention and the decoder's cross-attention mask the padded positions, so an
utterance encodes the same alone or in any batch (``tests/models/test_whisper.py``).

Decoding follows the Seq2Seq contract: ``start(features, lengths) -> DecoderState`` runs the
encoder once; ``step(tokens, state)`` feeds one token per hypothesis using the per-layer KV
caches (the cross-attention keys/values are projected once). ``decoding/search.py`` calls
``start(src)`` with one argument; :func:`with_lengths` binds a batch's lengths for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel, check_block_fields, init_gpt2
from seqformer.models.seq2seq import BOS_ID, EOS_ID, PAD_ID, DecoderState, Seq2SeqOutput
from seqformer.nn.attention import MultiHeadAttention
from seqformer.nn.conformer import ConformerEncoder
from seqformer.nn.layers import Decoder, Encoder, LayerCache
from seqformer.nn.positional import LearnedPositionalEmbedding
from seqformer.training.loss import label_smoothed_cross_entropy

FAMILY = "whisper"
# config.json entry of an imported Whisper with its checkpoint's generation settings (prompt,
# suppressed tokens; ``interop/hf_whisper.py`` writes it, ``tasks/speech.py`` reads it).
GENERATION_KEY = "generation"


@dataclass(frozen=True)
class WhisperConfig:
    """Shape of the model. ``vocab_size`` comes from the tokenizer. ``max_source_positions``
    bounds the encoder length after the stride-2 conv, so an input may have up to twice as many
    frames (Whisper: 1500 positions = 3000 frames = 30 s); ``max_target_positions`` bounds the
    decoder (bos, the output and eos). whisper-tiny is d_model 384, 6 heads, 4 + 4 layers, ffn
    1536, 80 mel bins. ``pad_id`` / ``bos_id`` / ``eos_id`` are seqformer's 0/1/2 for trained
    models and the checkpoint's own ids (pad = eos = <|endoftext|>, bos =
    <|startoftranscript|>) for imported ones."""

    vocab_size: int = 0
    num_mel_bins: int = 80
    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 512
    max_source_positions: int = 100
    max_target_positions: int = 32
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    encoder_block: str = "transformer"
    conv_kernel: int = 15
    label_smoothing: float = 0.1
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "encoder_layers", "decoder_layers",
                     "max_source_positions", "max_target_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.max_target_positions < 3:
            raise ConfigError("model.max_target_positions must be >= 3 (bos, a token, eos)")
        check_block_fields(self)
        if self.d_model % 2:
            raise ConfigError(f"model.d_model={self.d_model} must be even (sinusoidal "
                              "positions pair sines and cosines)")
        if self.eos_id == self.bos_id:
            raise ConfigError(f"model.eos_id={self.eos_id} must differ from model.bos_id")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing must be in [0, 1)")

    # What the shared checks and decoding/search.py read; derived, so not in config.json.
    @property
    def layers(self) -> int:
        return min(self.encoder_layers, self.decoder_layers)

    @property
    def max_len(self) -> int:
        return self.max_target_positions

    @property
    def positional(self) -> str:
        return "learned"

    @property
    def max_frames(self) -> int:
        """The most input frames the encoder positions cover (conv2 halves them)."""
        return 2 * self.max_source_positions


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder position table (length, channels): [sin | cos] of position times
    timescales spaced geometrically from 1 to 1/max_timescale over ``channels / 2`` steps
    (log increment over ``channels / 2 - 1``: the last channel pair reaches max_timescale,
    unlike Vaswani's table, so ``nn.positional``'s sinusoids would not load a checkpoint)."""
    half = channels // 2
    increment = math.log(max_timescale) / max(half - 1, 1)
    inv = torch.exp(-increment * torch.arange(half, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32).unsqueeze(1) * inv.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def encoder_lengths(frames: Tensor) -> Tensor:
    """Encoder positions of inputs with ``frames`` frames: conv2 (kernel 3, stride 2,
    padding 1) gives (frames - 1) // 2 + 1."""
    return torch.div(frames - 1, 2, rounding_mode="floor") + 1


@dataclass
class SpeechBatch:
    """``features`` (batch, n_mels, frames) zero-padded after each ``lengths`` (batch,) frames;
    ``tgt_in`` = [bos] + y and ``tgt_out`` = y + [eos], padded with ``pad_id``."""

    features: Tensor
    lengths: Tensor
    tgt_in: Tensor | None = None
    tgt_out: Tensor | None = None
    pad_id: int = PAD_ID

    def to(self, device: torch.device | str) -> SpeechBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return to_device(t, device)

        return SpeechBatch(move(self.features), move(self.lengths), move(self.tgt_in),
                           move(self.tgt_out), self.pad_id)

    @property
    def n_tgt_tokens(self) -> int:
        return 0 if self.tgt_out is None else int(self.tgt_out.ne(self.pad_id).sum())

    def __len__(self) -> int:
        return int(self.features.shape[0])


class Whisper(nn.Module, SavedModel):
    """Conv front end + sinusoids -> pre-LN encoder; tokens + learned positions -> pre-LN
    decoder with cross-attention -> tied output projection.

    Saved (``save`` / ``load``, from :class:`SavedModel`) with ``family: whisper``, the config
    fields and ``features``: the log-mel settings, so inference computes the features
    training did."""

    family = FAMILY
    description = "a Whisper speech-to-text model"
    config_class = WhisperConfig
    settings_key = "features"

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        if config.vocab_size <= max(config.pad_id, config.bos_id, config.eos_id):
            raise ConfigError("WhisperConfig needs vocab_size from the tokenizer (larger than "
                              "every special id)")
        self.config = c = config
        self.conv1 = nn.Conv1d(c.num_mel_bins, c.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.d_model, c.d_model, kernel_size=3, stride=2, padding=1)
        # Persistent: an imported checkpoint brings its own table (equal to the formula for
        # Whisper's), and it is small (positions x d_model). A Conformer encoder has relative
        # positions inside its attention: no table (it would be dead weight in checkpoints).
        self.encoder_positions: Tensor | None
        # Conformer-encoder checkpoints saved before the unused table was dropped still carry
        # it; it was never read, so loading and --resume ignore it (checkpoint.load_weights).
        self.obsolete_keys: tuple[str, ...] = (
            ("encoder_positions",) if c.encoder_block == "conformer" else ())
        self.register_buffer("encoder_positions",
                             whisper_sinusoids(c.max_source_positions, c.d_model)
                             if c.encoder_block == "transformer" else None)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder: nn.Module
        if c.encoder_block == "conformer":  # swish inside, as in the Conformer paper
            self.encoder = ConformerEncoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim,
                                            c.conv_kernel, c.dropout, "silu")
        else:
            self.encoder = Encoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                                   c.attention_dropout, c.activation, norm_first=True)
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.decoder_positions = LearnedPositionalEmbedding(c.d_model, c.max_target_positions)
        self.decoder = Decoder(c.decoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=True)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.k_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.output = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_gpt2(self, c.encoder_layers + c.decoder_layers)
        self.output.weight = self.embed_tokens.weight
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    # -- encoder --------------------------------------------------------------------------------
    def encode(self, features: Tensor, lengths: Tensor | None = None) -> tuple[Tensor,
                                                                              Tensor | None]:
        """``features`` (batch, n_mels, frames) -> memory (batch, positions, d_model) and its
        padding mask (True at padding; None when nothing is padded)."""
        c = self.config
        if features.dim() != 3 or features.shape[1] != c.num_mel_bins:
            raise ValueError(f"expected features (batch, {c.num_mel_bins}, frames), got "
                             f"{tuple(features.shape)}")
        frames = features.shape[2]
        if frames > c.max_frames:
            raise ValueError(f"{frames} frames exceed the {c.max_frames} the model takes "
                             f"(2 x model.max_source_positions={c.max_source_positions})")
        x = F.gelu(self.conv1(features))
        frame_pad = None
        if lengths is not None and bool(lengths.lt(frames).any()):
            frame_pad = torch.arange(frames, device=x.device).unsqueeze(0) >= lengths.unsqueeze(1)
            # conv2 must see zeros past the end, as it would for the utterance alone.
            x = x.masked_fill(frame_pad.unsqueeze(1), 0.0)
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        positions = x.shape[1]
        mask = None
        if frame_pad is not None:
            valid = encoder_lengths(lengths.to(x.device))
            mask = torch.arange(positions, device=x.device).unsqueeze(0) >= valid.unsqueeze(1)
        if self.config.encoder_block == "conformer":  # positions are relative, in attention
            return self.encoder(self.dropout(x), mask), mask
        assert self.encoder_positions is not None
        x = self.dropout(x + self.encoder_positions[:positions].to(x.dtype))
        memory, _ = self.encoder(x, mask)
        return memory, mask

    # -- decoder --------------------------------------------------------------------------------
    def _embed_target(self, tokens: Tensor, offset: int = 0) -> Tensor:
        length = tokens.shape[1]
        if offset + length > self.config.max_target_positions:
            raise ValueError(f"target of length {offset + length} exceeds "
                             f"model.max_target_positions={self.config.max_target_positions}")
        return self.dropout(self.embed_tokens(tokens) + self.decoder_positions(length, offset))

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_padding_mask: Tensor | None
               ) -> Tensor:
        """Teacher-forced decoder pass -> logits (batch, tgt_len, vocab)."""
        x, _ = self.decoder(self._embed_target(tgt_in), memory, memory_padding_mask)
        return self.output(x)

    def logits(self, features: Tensor, tgt_in: Tensor, lengths: Tensor | None = None) -> Tensor:
        memory, mask = self.encode(features, lengths)
        return self.decode(tgt_in, memory, mask)

    def forward(self, batch: SpeechBatch) -> Seq2SeqOutput:
        logits = self.logits(batch.features, batch.tgt_in, batch.lengths)
        loss, nll, n = label_smoothed_cross_entropy(logits.float(), batch.tgt_out,
                                                    self.config.label_smoothing, self.pad_id)
        return Seq2SeqOutput(loss, nll, logits, n)

    # -- incremental decoding (the Seq2Seq contract) -------------------------------------------
    def start(self, features: Tensor, lengths: Tensor | None = None) -> DecoderState:
        memory, mask = self.encode(features, lengths)
        return DecoderState(memory, mask, [LayerCache() for _ in self.decoder.layers])

    def fresh_state(self, memory: Tensor, memory_padding_mask: Tensor | None) -> DecoderState:
        """A decoder state at step 0 over an already-encoded batch: lets one encoder pass
        serve both language detection (a probe step) and the search that follows."""
        return DecoderState(memory, memory_padding_mask,
                            [LayerCache() for _ in self.decoder.layers])

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One token per hypothesis (batch,) -> log-probs (batch, vocab) of the next one; the
        prefix is never re-run (self-attention keys/values are cached)."""
        x = self._embed_target(tokens.view(-1, 1), offset=state.step)
        x, _ = self.decoder(x, state.memory, state.memory_padding_mask, state.caches)
        state.step += 1
        return self.output(x[:, -1]).float().log_softmax(dim=-1), state

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> Whisper:
        """A saved model (``save``), weights checked key by key as ``load_weights`` does."""
        from seqformer.config import from_dict
        from seqformer.training.checkpoint import check_state, read_weights

        data = cls.read_config(directory)
        data.pop(cls.settings_key, None)
        data.pop(GENERATION_KEY, None)  # an imported Whisper's prompt settings: the task's
        model = cls(from_dict(WhisperConfig, data, f"{directory}/config.json"))
        path = Path(directory) / "model.safetensors"
        state = read_weights(path)
        for key in model.obsolete_keys:
            state.pop(key, None)
        check_state(state, model.state_dict(), path)
        model.load_state_dict(state, strict=True)
        return model.to(map_location).eval()

    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> Whisper:
        """A local Hugging Face ``WhisperForConditionalGeneration`` directory as ours."""
        from seqformer.interop import hf_whisper

        return hf_whisper.load(path, trust_pickle)


def read_whisper_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a Whisper model without ``family`` (CheckpointError otherwise)."""
    return Whisper.read_config(directory)


class _BoundLengths:
    """The model with one batch's frame counts bound into ``start``, so decoding/search.py,
    which calls ``model.start(src)``, decodes padded batches unchanged; everything else
    (``step``, the special ids, ``config``) is the model's."""

    def __init__(self, model: Whisper, lengths: Tensor) -> None:
        self._model, self._lengths = model, lengths

    def start(self, features: Tensor) -> DecoderState:
        return self._model.start(features, self._lengths)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def with_lengths(model: Whisper, lengths: Tensor | None) -> Whisper | _BoundLengths:
    """``model`` for ``greedy_search`` / ``beam_search`` on features padded after ``lengths``."""
    return model if lengths is None else _BoundLengths(model, lengths)


class _Encoded:
    """The model with one batch's encoder output bound into ``start``: ``start(features)``
    ignores the features and returns a fresh state over the stored memory, so search.py
    decodes without running the encoder a second time."""

    def __init__(self, model: Whisper, memory: Tensor, mask: Tensor | None) -> None:
        self._model, self._memory, self._mask = model, memory, mask

    def start(self, features: Tensor) -> DecoderState:
        return self._model.fresh_state(self._memory, self._mask)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def with_memory(model: Whisper, memory: Tensor, mask: Tensor | None) -> _Encoded:
    """``model`` for ``greedy_search`` / ``beam_search`` over a batch already encoded
    (``model.encode``); pass the search any tensor with the batch's size as ``src``."""
    return _Encoded(model, memory, mask)
