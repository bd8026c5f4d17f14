"""Positional information for attention, which by itself is blind to token order.

The additive encodings return a (time, dim) tensor for positions ``offset .. offset+time-1``; the
offset lets incremental decoding ask for the position of the step it is at. Rotary embeddings are
not added to the input: they rotate queries and keys inside attention (see
:class:`RotaryEmbedding`), so ``make_positional`` returns None for them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POSITIONAL_KINDS = ("sinusoidal", "sinusoidal_concat", "learned", "rotary")


class SinusoidalPositionalEncoding(nn.Module):
    """Vaswani et al.'s fixed sines and cosines: no parameters, any length up to ``max_len``.

    ``concat`` puts all sines in the first half and all cosines in the second (the layout of
    tensor2tensor, fairseq and Marian/opus-mt) instead of interleaving them; the frequencies are
    the same, but a checkpoint trained with one layout is wrong under the other.
    """

    def __init__(self, dim: int, max_len: int = 1024, concat: bool = False) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        if concat:
            half = (dim + 1) // 2
            table[:, :half] = torch.sin(position * div)
            table[:, half:] = torch.cos(position * div[: dim // 2])
        else:
            table[:, 0::2] = torch.sin(position * div)
            table[:, 1::2] = torch.cos(position * div[: dim // 2])
        # Not persistent: it is recomputed on construction, so checkpoints stay small.
        self.register_buffer("table", table, persistent=False)
        self.max_len = max_len

    def forward(self, length: int, offset: int = 0) -> Tensor:
        return self.table[offset : offset + length]

    def at(self, position: Tensor) -> Tensor:
        """(1, dim) row at a 0-dim tensor position: no Python int, so a compiled decoding
        step stays one graph whatever the step."""
        return self.table.index_select(0, position.view(1))


class LearnedPositionalEmbedding(nn.Module):
    """One trained vector per position (BERT/GPT-2 style); cannot extrapolate past ``max_len``."""

    def __init__(self, dim: int, max_len: int = 1024) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.max_len = max_len

    def forward(self, length: int, offset: int = 0) -> Tensor:
        positions = torch.arange(offset, offset + length, device=self.embedding.weight.device)
        return self.embedding(positions)

    def at(self, position: Tensor) -> Tensor:
        """(1, dim) row at a 0-dim tensor position (see SinusoidalPositionalEncoding.at)."""
        return self.embedding(position.view(1))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE; Su et al., 2021), GPT-NeoX/Llama layout.

    Each pair of query/key features (i, i + dim/2) is rotated by the angle position * theta_i, so
    the dot product of a query at m with a key at n depends on m - n only: attention sees
    relative positions, and nothing is added to the residual stream. The halves layout
    (``rotate_half``) rather than GPT-J's interleaved pairs is the one Llama and GPT-NeoX
    checkpoints use. Angles are computed per call (one small outer product), so there is no
    length limit and no table to keep in the checkpoint.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary needs an even head dimension, got {dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.dim, self.base = dim, base

    def cos_sin(self, length: int, offset: int = 0) -> tuple[Tensor, Tensor]:
        """(length, dim) cosines and sines of the angles of positions offset .. offset+length-1."""
        positions = torch.arange(offset, offset + length, device=self.inv_freq.device,
                                 dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate_half(x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """Rotate ``q`` and ``k`` (batch, heads, time, dim) whose first position is ``offset``
        (the length of the cached prefix during incremental decoding)."""
        cos, sin = self.cos_sin(q.shape[-2], offset)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return q * cos + self.rotate_half(q) * sin, k * cos + self.rotate_half(k) * sin


def make_positional(kind: str, dim: int, max_len: int) -> nn.Module | None:
    """The additive encoding for ``kind``; None for ``rotary``, which lives in attention."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(dim, max_len)
    if kind == "sinusoidal_concat":
        return SinusoidalPositionalEncoding(dim, max_len, concat=True)
    if kind == "learned":
        return LearnedPositionalEmbedding(dim, max_len)
    if kind == "rotary":
        return None
    raise ValueError(f"unknown positional encoding {kind!r}; use one of {POSITIONAL_KINDS}")
