"""Multi-head scaled dot-product attention with masks and key/value caches.

One module serves encoder self-attention, causal decoder self-attention and encoder-decoder
cross-attention. The default path calls ``F.scaled_dot_product_attention`` so PyTorch can pick a
fused kernel; asking for the weights switches to an explicit softmax(QK^T/sqrt(d))V that returns
them, because the fused kernels never materialise the attention matrix.

Mask conventions (the same as ``torch.nn.MultiheadAttention``): ``key_padding_mask`` is boolean
(batch, src) with True where a key is padding; ``attn_mask`` is boolean (tgt, src) with True where
attention is forbidden, or a float mask added to the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.nn.positional import RotaryEmbedding


@dataclass
class KVCache:
    """Keys and values of one attention layer, shaped (batch, heads, time, head_dim).

    Decoder self-attention appends one step at a time; cross-attention fills it once from the
    encoder output (``static``) so the memory is projected a single time per sentence.

    Appended keys/values live in buffers with spare time capacity (doubled when full), and
    ``key``/``value`` are views of their filled part: a step writes one position instead of
    copying the whole prefix (``torch.cat`` per step made greedy decoding quadratic in
    memory traffic).
    """

    key: Tensor | None = None
    value: Tensor | None = None
    static: bool = False
    _key_buf: Tensor | None = field(default=None, repr=False)
    _value_buf: Tensor | None = field(default=None, repr=False)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        if self.static:
            self.key, self.value = key, value
            return key, value
        length = 0 if self.key is None else self.key.shape[2]
        end = length + key.shape[2]
        if self._key_buf is None or end > self._key_buf.shape[2]:
            capacity = max(16, 2 * end)
            shape = (key.shape[0], key.shape[1], capacity, key.shape[3])
            k_buf, v_buf = key.new_empty(shape), value.new_empty(shape)
            if length:
                k_buf[:, :, :length] = self.key
                v_buf[:, :, :length] = self.value
            self._key_buf, self._value_buf = k_buf, v_buf
        self._key_buf[:, :, length:end] = key
        self._value_buf[:, :, length:end] = value
        self.key, self.value = self._key_buf[:, :, :end], self._value_buf[:, :, :end]
        return self.key, self.value

    def select(self, indices: Tensor) -> KVCache:
        """Reorder along the batch axis: beam search keeps, drops and duplicates hypotheses."""
        if self.key is None:
            return KVCache(static=self.static)
        if self.static or self._key_buf is None:
            return KVCache(self.key.index_select(0, indices),
                           self.value.index_select(0, indices), self.static)
        # One copy of the filled part, straight into a buffer that keeps its spare capacity.
        length = self.key.shape[2]
        shape = (indices.numel(), *self._key_buf.shape[1:])
        k_buf, v_buf = self._key_buf.new_empty(shape), self._value_buf.new_empty(shape)
        torch.index_select(self.key, 0, indices, out=k_buf[:, :, :length])
        torch.index_select(self.value, 0, indices, out=v_buf[:, :, :length])
        return KVCache(k_buf[:, :, :length], v_buf[:, :, :length], False, k_buf, v_buf)


def build_attention_mask(
    batch: int,
    tgt_len: int,
    src_len: int,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    is_causal: bool,
    device: torch.device,
) -> Tensor | None:
    """Combine padding, explicit and causal masks into one additive float mask.

    Returns None when nothing is masked, so the fused kernel can run unmasked. The result is
    (batch or 1, 1, tgt, src) with 0 where attention is allowed and -inf where it is not.
    """
    if key_padding_mask is None and attn_mask is None and not is_causal:
        return None
    mask = torch.zeros(1, 1, tgt_len, src_len, device=device)
    if is_causal:
        # Query i may see keys 0..i+offset when the keys include a cached prefix.
        offset = src_len - tgt_len
        future = torch.ones(tgt_len, src_len, dtype=torch.bool, device=device).triu(1 + offset)
        mask = mask.masked_fill(future, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask = mask.masked_fill(attn_mask.to(device), float("-inf"))
        else:
            mask = mask + attn_mask.to(device)
    if key_padding_mask is not None:
        pad = key_padding_mask.view(batch, 1, 1, src_len)
        mask = mask.masked_fill(pad, float("-inf"))
    return mask


class MultiHeadAttention(nn.Module):
    """Attention with ``heads`` parallel heads of size d_model / heads.

    Separate q/k/v projections (rather than one packed matrix) let cross-attention project the
    encoder memory once into a cache and let checkpoints from other toolkits map one-to-one.
    An optional ``rotary`` module rotates queries and keys after the head split (self-attention
    only); cached keys are stored rotated, so each new step is rotated at its own position.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True,
                 rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = rotary

    def _split(self, x: Tensor) -> Tensor:
        batch, time, _ = x.shape
        return x.view(batch, time, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``memory`` (batch, src, dim), split into heads."""
        return self._split(self.k_proj(memory)), self._split(self.v_proj(memory))

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` (batch, tgt, dim) to ``key``/``value`` (batch, src, dim).

        With ``cache``: a static cache supplies precomputed keys/values (``key`` is ignored);
        otherwise this step's keys/values are appended and attention covers the whole prefix.
        Returns the output (batch, tgt, dim) and, if asked, weights (batch, heads, tgt, src).
        """
        key = query if key is None else key
        value = key if value is None else value
        batch, tgt_len, _ = query.shape
        q = self._split(self.q_proj(query))
        if cache is not None and cache.static and cache.key is not None:
            k, v = cache.key, cache.value
        else:
            k, v = self._split(self.k_proj(key)), self._split(self.v_proj(value))
            if self.rotary is not None:
                offset = 0 if cache is None or cache.key is None else cache.key.shape[2]
                q, k = self.rotary(q, k, offset)
            if cache is not None:
                k, v = cache.append(k, v)
                # A fixed-length cache (decoding/static.py) masks the slots not written yet.
                if attn_mask is None and hasattr(cache, "attention_mask"):
                    attn_mask = cache.attention_mask()
        src_len = k.shape[2]
        dropout = self.dropout if self.training else 0.0

        if not need_weights and key_padding_mask is None and attn_mask is None:
            # Fused path; a single query step against a cache needs no causal mask at all.
            # Under torch.compile with dynamic shapes the comparison is symbolic, and SDPA's
            # is_causal must be a plain bool: branching turns it into one (and a guard).
            causal = False
            if is_causal and tgt_len > 1:
                causal = True
            if causal and src_len != tgt_len:
                mask = build_attention_mask(batch, tgt_len, src_len, None, None, True, q.device)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype),
                                                     dropout_p=dropout)
            else:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
            weights = None
        else:
            mask = build_attention_mask(batch, tgt_len, src_len, key_padding_mask, attn_mask,
                                        is_causal and tgt_len > 1, q.device)
            if need_weights:
                scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
                if mask is not None:
                    scores = scores + mask.to(scores.dtype)
                weights = scores.softmax(dim=-1)
                out = F.dropout(weights, dropout, self.training) @ v
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype),
                                                     dropout_p=dropout)
                weights = None
        out = out.transpose(1, 2).reshape(batch, tgt_len, self.d_model)
        return self.out_proj(out), weights
