"""The Conformer block (Gulati et al., 2020): self-attention for global context plus a
convolution for local patterns, the encoder of most speech recognisers since.

One layer is a "macaron" sandwich, every part pre-LN with a residual:

    x = x + 1/2 FFN(x)            # half a feed-forward before ...
    x = x + MHSA(x)               # relative-position self-attention
    x = x + Conv(x)               # pointwise -> GLU -> depthwise -> BatchNorm -> swish -> pointwise
    x = x + 1/2 FFN(x)            # ... and half after
    x = LayerNorm(x)

The attention uses Transformer-XL's relative positions (Dai et al., 2019), as the paper does:
scores are ``(q + u) . k  +  (q + v) . W p(i - j)`` with ``p`` a sinusoid of the signed
distance and ``u``/``v`` learned per head, so what a frame attends to depends on how far away
the other frame is, not on absolute time -- speech has no meaningful frame 0. The distance
term is computed against every distance once and then gathered per (i, j) pair, which reads
more directly than the "shift" trick of the reference code and gives the same numbers.

The layout (names aside) is Hugging Face's ``Wav2Vec2ConformerEncoderLayer`` with
``position_embeddings_type="relative"`` (or ``None``); tests/nn/test_conformer.py checks the
outputs are equal with copied weights. One deliberate difference: padded frames are zeroed
before the depthwise convolution (as ESPnet does), so a padded batch gives each row exactly
what it gives alone; the reference lets padding leak into the last real frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.nn.attention import MultiHeadAttention, build_attention_mask
from seqformer.nn.conv import zero_padding
from seqformer.nn.feedforward import ACTIVATIONS, FeedForward


def relative_sinusoids(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoids of the signed distances ``length - 1, ..., 1, 0, -1, ..., -(length - 1)``
    (that order), shape (2 * length - 1, dim): sin on even features, cos on odd ones."""
    distance = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                    * (-math.log(10000.0) / dim))
    table = torch.zeros(2 * length - 1, dim, device=device)
    table[:, 0::2] = torch.sin(distance[:, None] * div)
    table[:, 1::2] = torch.cos(distance[:, None] * div)
    return table


class RelativeSelfAttention(MultiHeadAttention):
    """Self-attention with Transformer-XL relative position terms (see the module docstring);
    the q/k/v/out projections are :class:`MultiHeadAttention`'s."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__(d_model, heads, dropout)
        self.pos_proj = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))  # content bias
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))  # position bias

    def forward(self, x: Tensor, positions: Tensor,  # type: ignore[override]
                key_padding_mask: Tensor | None = None) -> Tensor:
        """``x`` (batch, time, dim), ``positions`` = :func:`relative_sinusoids` (2T-1, dim)."""
        batch, time, _ = x.shape
        q, k, v = (self._split(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        p = self.pos_proj(positions).view(-1, self.heads, self.head_dim).transpose(0, 1)
        # (q + v) . p for every distance, then the entry of distance i - j for each (i, j):
        # row i of the table holds distance T-1-i, so distance i-j sits at column T-1-i+j.
        by_distance = (q + self.pos_bias_v[:, None]) @ p.transpose(-2, -1)  # (B, H, T, 2T-1)
        i = torch.arange(time, device=x.device)
        column = (time - 1 - i)[:, None] + i[None, :]
        position_scores = by_distance.gather(-1, column.expand(batch, self.heads, time, time))
        bias = position_scores / math.sqrt(self.head_dim)
        mask = build_attention_mask(batch, time, time, key_padding_mask, None, False, x.device)
        if mask is not None:
            bias = bias + mask.to(bias.dtype)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q + self.pos_bias_u[:, None], k, v,
                                             attn_mask=bias, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(batch, time, self.d_model))


class ConformerConvolution(nn.Module):
    """LayerNorm -> pointwise conv to 2x channels -> GLU -> depthwise conv (``kernel_size``,
    centred) -> BatchNorm -> activation (swish in the paper) -> pointwise conv -> dropout; no
    biases before BatchNorm, as in the reference (the norm's shift makes them redundant)."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float = 0.0,
                 activation: str = "silu") -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv kernel_size must be odd (centred), got {kernel_size}")
        self.activation = ACTIVATIONS[activation]
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1, bias=False)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2,
                                   groups=d_model, bias=False)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        h = F.glu(self.pointwise1(self.norm(x).transpose(1, 2)), dim=1)
        h = zero_padding(h.transpose(1, 2), padding_mask).transpose(1, 2)
        h = self.activation(self.batch_norm(self.depthwise(h)))
        return self.dropout(self.pointwise2(h).transpose(1, 2))


class ConformerLayer(nn.Module):
    """One macaron Conformer block; ``relative=False`` drops the position terms (plain
    self-attention, for inputs that already carry positions)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, kernel_size: int = 31,
                 dropout: float = 0.1, activation: str = "silu", relative: bool = True) -> None:
        super().__init__()
        self.relative = relative
        self.ffn1_norm, self.ffn2_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn1 = FeedForward(d_model, ffn_dim, dropout, activation)
        self.ffn2 = FeedForward(d_model, ffn_dim, dropout, activation)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = (RelativeSelfAttention(d_model, heads, dropout) if relative
                     else MultiHeadAttention(d_model, heads, dropout))
        self.conv = ConformerConvolution(d_model, kernel_size, dropout, activation)
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        x = x + 0.5 * self.dropout(self.ffn1(self.ffn1_norm(x)))
        h = self.attn_norm(x)
        if self.relative:
            if positions is None:
                positions = relative_sinusoids(x.shape[1], x.shape[2], x.device).to(x.dtype)
            h = self.attn(h, positions, padding_mask)
        else:
            h, _ = self.attn(h, key_padding_mask=padding_mask)
        x = x + self.dropout(h)
        x = x + self.conv(x, padding_mask)
        x = x + 0.5 * self.dropout(self.ffn2(self.ffn2_norm(x)))
        return self.final_norm(x)


class ConformerEncoder(nn.Module):
    """A stack of :class:`ConformerLayer`; the relative-position table is built once per
    forward and shared by every layer. Same call as :class:`~seqformer.nn.layers.Encoder`:
    (batch, time, dim) and a (batch, time) padding mask, True at padding."""

    def __init__(self, layers: int, d_model: int, heads: int, ffn_dim: int,
                 kernel_size: int = 31, dropout: float = 0.1, activation: str = "silu",
                 relative: bool = True) -> None:
        super().__init__()
        self.relative = relative
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, heads, ffn_dim, kernel_size, dropout, activation, relative)
            for _ in range(layers))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        positions = (relative_sinusoids(x.shape[1], x.shape[2], x.device).to(x.dtype)
                     if self.relative else None)
        for layer in self.layers:
            x = layer(x, padding_mask, positions)
        return x
