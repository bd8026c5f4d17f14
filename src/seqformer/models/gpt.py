"""The decoder-only Transformer language model (GPT; Radford et al., 2018/2019).

A GPT block is the encoder block run causally, so the stack here is ``nn.layers.EncoderLayer``
with ``is_causal=True``: one attention implementation serves BERT-style encoders, the
encoder-decoder and this model. Training calls ``model(batch)`` and predicts every position of a
block in parallel (teacher forcing). Generation calls ``start(prompt)`` once, which runs the
prompt through the stack and fills one key/value cache per layer, then ``step(token, state)``
once per new token, so the prefix is never re-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.errors import ConfigError
from seqformer.models.common import (
    check_block_fields,
    family_config,
    init_gpt2,
    load_weights_into,
    save_model_dir,
)
from seqformer.nn.attention import KVCache
from seqformer.nn.layers import EncoderLayer
from seqformer.nn.positional import LearnedPositionalEmbedding, RotaryEmbedding, make_positional
from seqformer.training.loss import label_smoothed_cross_entropy

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model; ``vocab_size`` comes from the tokenizer, the rest from the recipe.

    Defaults follow GPT-2 (pre-LN, GELU, learned positions, tied output) rather than the
    encoder-decoder's paper defaults, because that is what decoder-only users expect.
    ``max_len`` is the context (block) size: the longest sequence the model ever attends over.
    ``positional``: ``learned`` (GPT-2), ``sinusoidal`` or ``rotary`` (RoPE in every
    self-attention, GPT-NeoX/Llama layout, angles base ``rotary_base``; nothing is added to the
    embeddings). ``norm_eps`` and the special ids exist so imported checkpoints (GPT-2 has one
    ``<|endoftext|>`` id for bos and eos) keep their exact numerics and vocabulary.
    """

    vocab_size: int = 0
    d_model: int = 256
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    norm_first: bool = True
    positional: str = "learned"
    max_len: int = 256
    tie_output: bool = True
    rotary_base: float = 10000.0
    norm_eps: float = 1e-5
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        check_block_fields(self)
        if self.positional == "sinusoidal_concat":
            raise ConfigError("model.positional='sinusoidal_concat' is an encoder-decoder "
                              "option; use learned, sinusoidal or rotary for a GPT")
        if self.positional == "rotary" and (self.d_model // self.heads) % 2:
            raise ConfigError(f"model.positional='rotary' needs an even head size, got "
                              f"d_model/heads={self.d_model // self.heads}; change model.heads")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < max(self.vocab_size, 5):
                raise ConfigError(f"model.{name}={getattr(self, name)} is outside the "
                                  f"vocabulary of {self.vocab_size}")


@dataclass
class GPTOutput:
    loss: Tensor  # mean cross-entropy over predicted (non-pad) targets: what is optimised
    nll: Tensor  # the same number detached (no label smoothing for LMs); perplexity = exp(nll)
    logits: Tensor  # (batch, time, vocab)
    # Scored targets, left on the device (reading it waits for the GPU); see Seq2SeqOutput.
    target_count: Tensor | int

    @property
    def n_tokens(self) -> int:
        return int(self.target_count)


@dataclass
class GPTState:
    """What generation carries between steps: one cache per layer and the next position."""

    caches: list[KVCache]
    step: int  # tokens already in the caches = position of the next token
    log_probs: Tensor  # (batch, vocab): distribution of the next token

    def select(self, indices: Tensor) -> GPTState:
        """Keep, drop or duplicate rows (e.g. several samples of one prompt)."""
        return GPTState([c.select(indices) for c in self.caches], self.step,
                        self.log_probs.index_select(0, indices))


class GPT(nn.Module):
    """Token + position embeddings -> N causal blocks -> LayerNorm -> tied linear head."""

    unk_id = UNK_ID

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.vocab_size <= 4:
            raise ConfigError("GPTConfig needs vocab_size from the tokenizer (> 4)")
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = make_positional(c.positional, c.d_model, c.max_len)
        # One rotary module (buffers only) shared by every layer's self-attention.
        rotary = (RotaryEmbedding(c.d_model // c.heads, c.rotary_base)
                  if c.positional == "rotary" else None)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.heads, c.ffn_dim, c.dropout, c.attention_dropout,
                         c.activation, c.norm_first, c.norm_eps, rotary=rotary)
            for _ in range(c.layers))
        # Pre-LN leaves the residual stream unnormalised after the last block.
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps) if c.norm_first else nn.Identity()
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_output:
            self.head.weight = self.embed.weight
        # Sines have amplitude 1 while N(0, 0.02) token vectors are tiny; scale tokens up so the
        # position signal does not drown them (learned positions start at the same 0.02).
        self.embed_scale = math.sqrt(c.d_model) if c.positional == "sinusoidal" else 1.0
        # Plain attributes (decoding reads model.pad_id/bos_id/eos_id); the config decides them.
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    def _init_weights(self) -> None:
        init_gpt2(self, self.config.layers)

    # -- the stack --------------------------------------------------------------------------------
    def hidden(self, tokens: Tensor, caches: list[KVCache] | None = None,
               offset: int = 0) -> Tensor:
        """Final hidden states (batch, time, d_model) of ``tokens`` at positions offset...

        Trailing padding needs no mask: under the causal mask no real token ever sees it.
        """
        length = tokens.shape[1]
        if offset + length > self.config.max_len:
            raise ValueError(f"sequence of length {offset + length} exceeds the context "
                             f"model.max_len={self.config.max_len}")
        x = self.embed(tokens) * self.embed_scale
        if self.pos is not None:  # rotary positions act inside attention instead
            x = x + self.pos(length, offset)
        x = self.embed_dropout(x)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, is_causal=True, cache=None if caches is None else caches[i])
        return self.norm(x)

    def logits(self, tokens: Tensor) -> Tensor:
        """(batch, time, vocab) next-token logits for every position, without a cache."""
        return self.head(self.hidden(tokens))

    def forward(self, batch) -> GPTOutput:
        logits = self.logits(batch.inputs)
        loss, nll, n_tokens = label_smoothed_cross_entropy(logits.float(), batch.targets, 0.0,
                                                           ignore_index=-100)
        return GPTOutput(loss, nll, logits, n_tokens)

    # -- incremental decoding -------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompt: Tensor) -> GPTState:
        """Run ``prompt`` (batch, time >= 1) once, filling the caches; no padding allowed."""
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be (batch, time >= 1), got {tuple(prompt.shape)}")
        caches = [KVCache() for _ in self.layers]
        x = self.hidden(prompt, caches)
        log_probs = self.head(x[:, -1]).float().log_softmax(dim=-1)
        return GPTState(caches, prompt.shape[1], log_probs)

    @torch.inference_mode()
    def step(self, tokens: Tensor, state: GPTState) -> tuple[Tensor, GPTState]:
        """Append one token per row (batch,) -> log-probs (batch, vocab) of the next one."""
        x = self.hidden(tokens.view(-1, 1), state.caches, offset=state.step)
        state.step += 1
        state.log_probs = self.head(x[:, -1]).float().log_softmax(dim=-1)
        return state.log_probs, state

    # -- size and cost ----------------------------------------------------------------------------
    def num_parameters(self, non_embedding: bool = False) -> int:
        """All parameters (tied ones once); ``non_embedding`` drops the position table, as
        nanoGPT does for its FLOP count (token embeddings are the output head too, so stay)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.pos, LearnedPositionalEmbedding):
            n -= self.pos.embedding.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM estimate:
        6N for the matrix multiplies plus 12 * layers * d_model * T for attention scores."""
        T = seq_len or self.config.max_len
        c = self.config
        return 6.0 * self.num_parameters(non_embedding=True) + 12.0 * c.layers * c.d_model * T

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``directory``."""
        save_model_dir(self, config_json(self.config), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> GPT:
        config = family_config(directory, "gpt", "a language model; pass a run trained with "
                               "'task: lm'", "seq2seq")
        model = cls(from_dict(GPTConfig, config, f"{directory}/config.json"))
        return load_weights_into(model, directory, map_location)


    # -- Hugging Face interop (GPT-2) ------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | Path, trust_pickle: bool = False) -> GPT:
        """A GPT with the weights of the local GPT-2 directory ``path`` (``save_pretrained``
        layout; safetensors, or ``pytorch_model.bin`` only with ``trust_pickle``)."""
        from seqformer.interop import hf_gpt2

        return hf_gpt2.load(path, trust_pickle)

    def to_hf(self, path: str | Path, tokenizer=None) -> None:
        """Write a directory ``GPT2LMHeadModel.from_pretrained(path)`` loads (plus the
        tokenizer files when an imported ``tokenizer`` is given)."""
        from seqformer.interop import hf_gpt2

        hf_gpt2.save(self, path, tokenizer)


def config_json(config: GPTConfig) -> dict:
    """The ``config.json`` content; ``family`` tells loaders which model class to build."""
    return {"family": "gpt", **to_dict(config)}
