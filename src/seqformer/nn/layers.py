"""Encoder and decoder layers, and stacks of N of them.

An encoder layer is self-attention then a feed-forward network; a decoder layer adds masked
(causal) self-attention and encoder-decoder cross-attention before its feed-forward network.
Every sub-layer sits inside a :class:`Residual`, pre-LN or post-LN by one flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from seqformer.nn.attention import KVCache, MultiHeadAttention
from seqformer.nn.feedforward import FeedForward
from seqformer.nn.norm import Residual
from seqformer.nn.positional import RotaryEmbedding


@dataclass
class LayerCache:
    """What one decoder layer remembers between steps: its own keys/values and the memory's."""

    self_attn: KVCache = field(default_factory=KVCache)
    cross_attn: KVCache = field(default_factory=lambda: KVCache(static=True))

    def select(self, indices: Tensor) -> LayerCache:
        return LayerCache(self.self_attn.select(indices), self.cross_attn.select(indices))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu",
                 norm_first: bool = True, norm_eps: float = 1e-5, *,
                 rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        # rotary (a GPT option) rotates self-attention queries and keys by position.
        self.self_attn = MultiHeadAttention(dim, heads, attention_dropout, rotary=rotary)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        # norm_eps: BERT uses 1e-12; checkpoints converted from it need the same value.
        self.attn_block = Residual(dim, dropout, norm_first, norm_eps)
        self.ffn_block = Residual(dim, dropout, norm_first, norm_eps)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None,
                need_weights: bool = False, is_causal: bool = False,
                cache: KVCache | None = None,
                attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Bidirectional by default (encoder); ``is_causal`` with an optional ``cache`` makes
        the same block a decoder-only (GPT) layer, so both families share one implementation.
        ``attn_mask`` (additive float or boolean True = blocked, (batch or 1, 1, tgt, src)) is
        for masks that are not just causal or key padding (the Decision Transformer's).
        """
        weights: list[Tensor | None] = [None]

        def attend(h: Tensor) -> Tensor:
            out, weights[0] = self.self_attn(h, key_padding_mask=padding_mask,
                                             attn_mask=attn_mask,
                                             is_causal=is_causal, cache=cache,
                                             need_weights=need_weights)
            return out

        x = self.attn_block(x, attend)
        x = self.ffn_block(x, self.ffn)
        return x, weights[0]


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu",
                 norm_first: bool = True) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.self_block = Residual(dim, dropout, norm_first)
        self.cross_block = Residual(dim, dropout, norm_first)
        self.ffn_block = Residual(dim, dropout, norm_first)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_padding_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Teacher forcing when ``cache`` is None (all positions at once, causal mask);
        incremental decoding otherwise (``x`` holds only the new positions).

        Returns the output and the (self-attention, cross-attention) weights if asked.
        """
        weights: list[Tensor | None] = [None, None]

        def self_attend(h: Tensor) -> Tensor:
            out, weights[0] = self.self_attn(
                h, is_causal=True, cache=None if cache is None else cache.self_attn,
                need_weights=need_weights)
            return out

        def cross_attend(h: Tensor) -> Tensor:
            out, weights[1] = self.cross_attn(
                h, memory, key_padding_mask=memory_padding_mask,
                cache=None if cache is None else cache.cross_attn, need_weights=need_weights)
            return out

        x = self.self_block(x, self_attend)
        x = self.cross_block(x, cross_attend)
        x = self.ffn_block(x, self.ffn)
        return x, (weights[0], weights[1])


class Encoder(nn.Module):
    """N encoder layers; a final LayerNorm when pre-LN, since the last residual is unnormalised."""

    def __init__(self, layers: int, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu",
                 norm_first: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, ffn_dim, dropout, attention_dropout, activation, norm_first,
                         norm_eps)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if norm_first else nn.Identity()

    def forward(self, x: Tensor, padding_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, list[Tensor | None]]:
        all_weights = []
        for layer in self.layers:
            x, w = layer(x, padding_mask, need_weights)
            all_weights.append(w)
        return self.norm(x), all_weights


class Decoder(nn.Module):
    """N decoder layers sharing one memory; final LayerNorm when pre-LN."""

    def __init__(self, layers: int, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu",
                 norm_first: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, heads, ffn_dim, dropout, attention_dropout, activation, norm_first)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_padding_mask: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[tuple[Tensor | None, Tensor | None]]]:
        all_weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, memory, memory_padding_mask, None if caches is None else caches[i],
                         need_weights)
            all_weights.append(w)
        return self.norm(x), all_weights
