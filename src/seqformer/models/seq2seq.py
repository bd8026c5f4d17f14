"""The encoder-decoder Transformer (Vaswani et al., 2017), as a thin composition of ``nn/``.

Training calls ``model(batch)`` (teacher forcing: every target position predicted in parallel
under a causal mask). Decoding calls ``start(src)`` once, which runs the encoder and projects its
output into each layer's cross-attention cache, then ``step(tokens, state)`` once per output
token; the decoder never re-runs over the prefix, its self-attention keys/values are cached.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.common import (
    check_block_fields,
    family_config,
    load_weights_into,
    save_model_dir,
)
from seqformer.nn.conformer import ConformerEncoder
from seqformer.nn.layers import Decoder, Encoder, LayerCache
from seqformer.nn.positional import make_positional

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Shape of the model; the vocab sizes come from the tokenizers, the rest from the recipe.

    The last group of fields exists so imported checkpoints (Marian / opus-mt) run with their
    exact numerics: ``output_bias`` is Marian's ``final_logits_bias``; ``pad_id``/``bos_id``/
    ``eos_id`` are the vocabulary's special ids (Marian: eos 0, pad last, and decoding starts
    from pad, so ``bos_id == pad_id``).
    """

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    d_model: int = 256
    heads: int = 4
    layers: int = 3
    encoder_layers: int | None = None  # default: ``layers``
    decoder_layers: int | None = None  # default: ``layers``
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "relu"
    norm_first: bool = True
    positional: str = "sinusoidal"
    max_len: int = 256
    share_embeddings: bool = False
    tie_output: bool = True
    scale_embedding: bool = True
    label_smoothing: float = 0.1
    encoder_block: str = "transformer"  # or "conformer" (nn/conformer.py)
    conv_kernel: int = 7  # the Conformer's depthwise convolution width (odd)
    output_bias: bool = False
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        check_block_fields(self)
        if self.positional == "rotary":
            raise ConfigError("model.positional='rotary' is a GPT option; use sinusoidal, "
                              "sinusoidal_concat or learned for the encoder-decoder")
        if self.eos_id in (self.pad_id, self.bos_id):
            raise ConfigError(f"model.eos_id={self.eos_id} must differ from model.pad_id and "
                              "model.bos_id")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing must be in [0, 1)")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError("model.share_embeddings needs one shared vocabulary; set "
                              "tokenizer.shared: true or model.share_embeddings: false")

    @property
    def n_encoder_layers(self) -> int:
        return self.encoder_layers or self.layers

    @property
    def n_decoder_layers(self) -> int:
        return self.decoder_layers or self.layers


@dataclass
class Seq2SeqOutput:
    loss: Tensor  # label-smoothed mean over target tokens: what the optimizer sees
    nll: Tensor  # plain mean negative log-likelihood: what perplexity is made of
    logits: Tensor  # (batch, tgt, vocab)
    # Scored target tokens, left on the device: turning it into a number waits for the GPU, so
    # only what needs the number (validation sums) reads `n_tokens`; a training step never does.
    target_count: Tensor | int

    @property
    def n_tokens(self) -> int:
        return int(self.target_count)


@dataclass
class DecoderState:
    """Everything decoding carries between steps; ``select`` reorders it for beam search."""

    memory: Tensor  # (batch, src, dim)
    memory_padding_mask: Tensor | None  # (batch, src), True at padding
    caches: list[LayerCache]
    step: int = 0
    extras: dict = field(default_factory=dict)

    def select(self, indices: Tensor) -> DecoderState:
        mask = self.memory_padding_mask
        return DecoderState(
            self.memory.index_select(0, indices),
            None if mask is None else mask.index_select(0, indices),
            [c.select(indices) for c in self.caches],
            self.step,
            self.extras,
        )

    def select_beams(self, indices: Tensor) -> DecoderState:
        """``select`` for beam search's per-step reordering, where every index stays inside its
        sentence's group of beams: the encoder memory and the cross-attention keys/values are
        identical across a group, so only the decoder's own caches need copying (the memory
        side is most of the cache: copying it every step cost more than the step's
        attention)."""
        return DecoderState(self.memory, self.memory_padding_mask,
                            [LayerCache(c.self_attn.select(indices), c.cross_attn)
                             for c in self.caches], self.step, self.extras)


class Seq2Seq(nn.Module):
    """Embeddings -> encoder stack -> decoder stack -> linear output (softmax in the loss)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.src_vocab_size <= 4 or config.tgt_vocab_size <= 4:
            raise ConfigError("Seq2SeqConfig needs src_vocab_size and tgt_vocab_size from the "
                              "tokenizers (both > 4)")
        self.config = c = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = (self.src_embed if c.share_embeddings
                          else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id))
        # A Conformer encoder has relative positions inside its attention: no source table
        # (a learned one would be parameters that never get a gradient).
        self.src_pos = (make_positional(c.positional, c.d_model, c.max_len)
                        if c.encoder_block == "transformer" else None)
        self.tgt_pos = make_positional(c.positional, c.d_model, c.max_len)
        self.embed_dropout = nn.Dropout(c.dropout)
        args = (c.d_model, c.heads, c.ffn_dim, c.dropout, c.attention_dropout, c.activation,
                c.norm_first)
        self.encoder: nn.Module
        if c.encoder_block == "conformer":
            self.encoder = ConformerEncoder(c.n_encoder_layers, c.d_model, c.heads, c.ffn_dim,
                                            c.conv_kernel, c.dropout, "silu")
        else:
            self.encoder = Encoder(c.n_encoder_layers, *args)
        self.decoder = Decoder(c.n_decoder_layers, *args)
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
        self._init_weights()
        if c.tie_output:
            self.output.weight = self.tgt_embed.weight
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        # Plain attributes (decoding reads model.pad_id/bos_id/eos_id); the config decides them.
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    def _init_weights(self) -> None:
        """Xavier for matrices (as in the reference Transformer), N(0, d^-1/2) for embeddings so
        that after the sqrt(d) scale tokens and positions have comparable magnitude."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name and "pos" not in name:
                nn.init.xavier_uniform_(p)
        # A list, not a set: set order follows object addresses, and the init order decides
        # which random numbers each embedding gets (same seed must give the same model).
        embeddings = [self.src_embed] + ([] if self.tgt_embed is self.src_embed
                                         else [self.tgt_embed])
        for emb in embeddings:
            nn.init.normal_(emb.weight, std=self.config.d_model ** -0.5)
            with torch.no_grad():
                emb.weight[self.config.pad_id].zero_()

    # -- shared pieces ------------------------------------------------------------------------
    def _embed(self, tokens: Tensor, embed: nn.Embedding, pos: nn.Module | None,
               offset: int = 0) -> Tensor:
        length = tokens.shape[1]
        if offset + length > self.config.max_len:
            raise ValueError(f"sequence of length {offset + length} exceeds model.max_len="
                             f"{self.config.max_len}")
        x = embed(tokens) * self.embed_scale
        return self.embed_dropout(x if pos is None else x + pos(length, offset))

    def encode(self, src: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None, list]:
        """Run the encoder over ``src`` (batch, src_len) -> memory, padding mask, weights."""
        padding = src.eq(self.pad_id)
        # Unpadded batches take the fused path without a mask. Asking waits for the device,
        # and under torch.compile splits the graph on data, so only eager CPU code asks: an
        # all-False mask is exact.
        ask = src.device.type == "cpu" and not torch.compiler.is_compiling()
        mask = padding if not ask or bool(padding.any()) else None
        x = self._embed(src, self.src_embed, self.src_pos)
        if self.config.encoder_block == "conformer":
            if need_weights:
                raise ConfigError("attention maps need model.encoder_block: transformer (the "
                                  "Conformer's relative-position attention does not return "
                                  "its weights)")
            return self.encoder(x, mask), mask, []
        memory, weights = self.encoder(x, mask, need_weights)
        return memory, mask, weights

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_padding_mask: Tensor | None,
               need_weights: bool = False) -> tuple[Tensor, list]:
        """Teacher-forced decoder pass -> logits (batch, tgt_len, vocab) and attention weights."""
        x = self._embed(tgt_in, self.tgt_embed, self.tgt_pos)
        x, weights = self.decoder(x, memory, memory_padding_mask, need_weights=need_weights)
        return self.output(x), weights

    def forward(self, batch) -> Seq2SeqOutput:
        memory, mask, _ = self.encode(batch.src)
        logits, _ = self.decode(batch.tgt_in, memory, mask)
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        target = batch.tgt_out.reshape(-1)
        loss = F.cross_entropy(flat_logits, target, ignore_index=self.pad_id,
                               label_smoothing=self.config.label_smoothing)
        nll = (loss.detach() if self.config.label_smoothing == 0.0 else
               F.cross_entropy(flat_logits.detach(), target, ignore_index=self.pad_id))
        return Seq2SeqOutput(loss, nll, logits, target.ne(self.pad_id).sum())

    # -- incremental decoding -------------------------------------------------------------------
    def start(self, src: Tensor) -> DecoderState:
        memory, mask, _ = self.encode(src)
        caches = [LayerCache() for _ in self.decoder.layers]
        return DecoderState(memory, mask, caches)

    def step(self, tokens: Tensor, state: DecoderState,
             need_weights: bool = False) -> tuple[Tensor, DecoderState]:
        """Feed one token per hypothesis (batch,) -> log-probs (batch, vocab) of the next one."""
        x = self._embed(tokens.view(-1, 1), self.tgt_embed, self.tgt_pos, offset=state.step)
        x, weights = self.decoder(x, state.memory, state.memory_padding_mask, state.caches,
                                  need_weights)
        if need_weights:
            state.extras["weights"] = weights
        state.step += 1
        logits = self.output(x[:, -1]).float()
        return logits.log_softmax(dim=-1), state

    # -- persistence -----------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``directory``."""
        save_model_dir(self, config_json(self.config), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> Seq2Seq:
        # Runs from before ``family`` existed are encoder-decoders.
        config = family_config(directory, "seq2seq", "an encoder-decoder model", "seq2seq")
        model = cls(from_dict(Seq2SeqConfig, config, f"{directory}/config.json"))
        return load_weights_into(model, directory, map_location)


    # -- Hugging Face interop (Marian / opus-mt) -------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> Seq2Seq:
        """A Seq2Seq with the weights of the local Marian directory ``path`` (``save_pretrained``
        layout; safetensors, or ``pytorch_model.bin`` only with ``trust_pickle``)."""
        from seqformer.interop import hf_marian

        return hf_marian.load(path, trust_pickle)

    def to_hf(self, path: str | Path, tokenizers=None) -> None:
        """Write a directory ``MarianMTModel.from_pretrained(path)`` loads (plus the
        SentencePiece files when the imported (source, target) ``tokenizers`` are given)."""
        from seqformer.interop import hf_marian

        hf_marian.save(self, path, tokenizers)


def config_json(config: Seq2SeqConfig) -> dict:
    """The ``config.json`` content; ``family`` tells loaders which model class to build."""
    return {"family": "seq2seq", **to_dict(config)}


def read_model_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: no such model directory; pass a run directory "
                              "written by 'seqformer train'")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {directory} is not a seqformer model "
                              "directory") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); the model directory is "
                              "corrupt, re-train or restore it") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config
