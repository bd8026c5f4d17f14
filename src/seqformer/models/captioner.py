"""An image captioner: a ViT encoder and a GPT-2-shaped Transformer decoder with
cross-attention (the layout of Hugging Face's ``VisionEncoderDecoderModel`` built from a
``ViTModel`` and a ``GPT2LMHeadModel(add_cross_attention=True)``, so those checkpoints map one
to one: ``interop/hf_caption.py``).

- encoder: ``models/vit.py``'s pieces -- Conv2d patch embedding, a learned [CLS] vector,
  learned positions -- and the shared pre-LN ``nn.layers.Encoder`` with its final LayerNorm
  (eps ``layer_norm_eps``, 1e-12 like HF's ViT). Its every output position, [CLS] included, is
  the decoder's memory; no padding, since every image of a model has one size.
- decoder: token embedding (not scaled) + learned positions, the shared pre-LN
  ``nn.layers.Decoder`` (causal self-attention, cross-attention, FFN; each in a pre-LN residual
  block, as GPT-2's ``ln_1`` / ``ln_cross_attn`` / ``ln_2``) with its final LayerNorm (``ln_f``)
  and an output projection tied to the token embedding, without bias.

Training is teacher forcing with the label-smoothed loss of the other encoder-decoders
(:class:`~seqformer.models.seq2seq.Seq2SeqOutput`). Decoding follows the Seq2Seq contract:
``start(pixels)`` runs the encoder once and returns seq2seq's ``DecoderState`` (its
cross-attention caches are filled on the first step), ``step(tokens, state)`` feeds one token
per hypothesis, so ``decoding/search.py``'s greedy and beam search decode it unchanged.
search.py's default output bound counts non-zero source ids, meaningless for pixels: callers
pass ``max_length`` (:func:`caption_length`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel, check_block_fields, init_gpt2, init_vit
from seqformer.models.seq2seq import BOS_ID, EOS_ID, PAD_ID, DecoderState, Seq2SeqOutput
from seqformer.models.vit import PatchEmbedding
from seqformer.nn.feedforward import ACTIVATIONS
from seqformer.nn.layers import Decoder, Encoder, LayerCache
from seqformer.nn.positional import LearnedPositionalEmbedding
from seqformer.training.loss import label_smoothed_cross_entropy

FAMILY = "captioner"


@dataclass(frozen=True)
class CaptionerConfig:
    """Shape of the model. ``image_size`` (square side; ``patch_size`` divides it) and
    ``channels`` come from the data, ``vocab_size`` from the tokenizer. ``ffn_dim`` is the
    encoder's FFN width (ViT's intermediate_size) and ``decoder_ffn_dim`` the decoder's
    (GPT-2's n_inner; default ``ffn_dim``); ``activation`` is the encoder's (ViT: gelu) and
    ``decoder_activation`` the decoder's (GPT-2: gelu_tanh, its ``gelu_new``).
    ``max_target_positions`` bounds the decoder input (bos, the caption, eos). ``pad_id`` /
    ``bos_id`` / ``eos_id`` are seqformer's 0/1/2 for trained models and the checkpoint's
    (``decoder_start_token_id`` as bos) for imported ones."""

    vocab_size: int = 0
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 256
    decoder_ffn_dim: int | None = None
    max_target_positions: int = 32
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    decoder_activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-12
    label_smoothing: float = 0.1
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "encoder_layers",
                     "decoder_layers", "max_target_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.patch_size={self.patch_size} must divide "
                              f"model.image_size={self.image_size}")
        if self.max_target_positions < 3:
            raise ConfigError("model.max_target_positions must be >= 3 (bos, a word, eos)")
        if self.decoder_ffn_dim is not None and self.decoder_ffn_dim < 1:
            raise ConfigError(f"model.decoder_ffn_dim must be positive (or null), got "
                              f"{self.decoder_ffn_dim}")
        if self.decoder_activation not in ACTIVATIONS:
            raise ConfigError(f"model.decoder_activation={self.decoder_activation!r}; use one "
                              f"of {', '.join(ACTIVATIONS)}")
        if not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"model.layer_norm_eps must be in (0, 1), got "
                              f"{self.layer_norm_eps}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing must be in [0, 1)")
        if self.eos_id == self.bos_id:
            raise ConfigError(f"model.eos_id={self.eos_id} must differ from model.bos_id")
        check_block_fields(self)

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
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def decoder_ffn(self) -> int:
        return self.decoder_ffn_dim or self.ffn_dim


@dataclass
class CaptionBatch:
    """``pixels`` (batch, channels, H, W), normalised; ``tgt_in`` = [bos] + y and ``tgt_out``
    = y + [eos], padded with ``pad_id`` after the last real token."""

    pixels: Tensor
    tgt_in: Tensor | None = None
    tgt_out: Tensor | None = None
    pad_id: int = PAD_ID

    def to(self, device: torch.device | str) -> CaptionBatch:
        return CaptionBatch(to_device(self.pixels, device), to_device(self.tgt_in, device),
                            to_device(self.tgt_out, device), self.pad_id)

    @property
    def n_tgt_tokens(self) -> int:
        return 0 if self.tgt_out is None else int(self.tgt_out.ne(self.pad_id).sum())

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def collate(pixels: Tensor, captions: list[list[int]], pad_id: int = PAD_ID,
            bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> CaptionBatch:
    """A batch of normalised images and their caption ids (without bos / eos)."""
    width = max(len(y) for y in captions) + 1
    tgt_in = torch.full((len(captions), width), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(captions), width), pad_id, dtype=torch.long)
    for i, y in enumerate(captions):
        tgt_in[i, : len(y) + 1] = torch.tensor([bos_id, *y])
        tgt_out[i, : len(y) + 1] = torch.tensor([*y, eos_id])
    return CaptionBatch(pixels, tgt_in, tgt_out, pad_id)


class Captioner(nn.Module, SavedModel):
    """ViT encoder -> memory; tokens + learned positions -> pre-LN decoder with cross-attention
    -> tied output projection.

    Saved (``save`` / ``load``, from :class:`SavedModel`) with ``family: captioner``, the config
    fields and ``preprocess``: how raw pixels are scaled and normalised (ViT's block), so
    inference repeats what training did."""

    family: ClassVar[str] = FAMILY
    description: ClassVar[str] = "an image captioner"
    config_class: ClassVar[type] = CaptionerConfig
    settings_key: ClassVar[str] = "preprocess"

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        if config.vocab_size <= max(config.pad_id, config.bos_id, config.eos_id):
            raise ConfigError("CaptionerConfig needs vocab_size from the tokenizer (larger than "
                              "every special id)")
        self.config = c = config
        self.patch_embed = PatchEmbedding(c.channels, c.d_model, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.position = LearnedPositionalEmbedding(c.d_model, c.num_patches + 1)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=True,
                               norm_eps=c.layer_norm_eps)
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.decoder_positions = LearnedPositionalEmbedding(c.d_model, c.max_target_positions)
        self.decoder = Decoder(c.decoder_layers, c.d_model, c.heads, c.decoder_ffn, c.dropout,
                               c.attention_dropout, c.decoder_activation, norm_first=True)
        self.output = nn.Linear(c.d_model, c.vocab_size, bias=False)
        # Each half starts as its own family does: ViT's truncated normal for the encoder,
        # GPT-2's scaled normal for the decoder (what HF's from-scratch models do too).
        init_vit(nn.ModuleList([self.patch_embed, self.encoder]), self.cls_token,
                 self.position.embedding.weight)
        init_gpt2(nn.ModuleList([self.embed_tokens, self.decoder_positions, self.decoder]),
                  c.decoder_layers)
        self.output.weight = self.embed_tokens.weight
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    # -- encoder --------------------------------------------------------------------------------
    def encode(self, pixels: Tensor) -> Tensor:
        """Normalised images (batch, channels, H, W) -> memory (batch, 1 + patches, d_model)."""
        c = self.config
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (c.channels, c.image_size,
                                                            c.image_size):
            raise ValueError(f"expected images (batch, {c.channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(pixels.shape)}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = self.dropout(x + self.position(x.shape[1]))
        memory, _ = self.encoder(x)
        return memory

    # -- decoder --------------------------------------------------------------------------------
    def _embed_target(self, tokens: Tensor, offset: int = 0) -> Tensor:
        length = tokens.shape[1]
        if offset + length > self.config.max_target_positions:
            raise ValueError(f"caption of length {offset + length} exceeds "
                             f"model.max_target_positions={self.config.max_target_positions}")
        return self.dropout(self.embed_tokens(tokens) + self.decoder_positions(length, offset))

    def decode(self, tgt_in: Tensor, memory: Tensor) -> Tensor:
        """Teacher-forced decoder pass -> logits (batch, tgt_len, vocab)."""
        x, _ = self.decoder(self._embed_target(tgt_in), memory)
        return self.output(x)

    def logits(self, pixels: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, self.encode(pixels))

    def forward(self, batch: CaptionBatch) -> Seq2SeqOutput:
        logits = self.logits(batch.pixels, batch.tgt_in)
        loss, nll, n = label_smoothed_cross_entropy(logits.float(), batch.tgt_out,
                                                    self.config.label_smoothing, batch.pad_id)
        return Seq2SeqOutput(loss, nll, logits, n)

    # -- incremental decoding (the Seq2Seq contract) -------------------------------------------
    def start(self, pixels: Tensor) -> DecoderState:
        return DecoderState(self.encode(pixels), None,
                            [LayerCache() for _ in self.decoder.layers])

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One token per hypothesis (batch,) -> log-probs (batch, vocab) of the next one; the
        prefix is never re-run (self-attention keys/values are cached)."""
        x = self._embed_target(tokens.view(-1, 1), offset=state.step)
        x, _ = self.decoder(x, state.memory, None, state.caches)
        state.step += 1
        return self.output(x[:, -1]).float().log_softmax(dim=-1), state


def caption_length(model: Captioner, max_length: int | None = None) -> int:
    """The output bound (caption tokens + eos) decoding passes to search.py: ``max_length``
    within what the decoder positions allow (bos takes one)."""
    limit = model.config.max_target_positions - 1
    return min(max_length or limit, limit)
