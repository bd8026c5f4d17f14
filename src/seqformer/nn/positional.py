"""Positional information for attention, which by itself is blind to token order.

Both encodings return a (time, dim) tensor for positions ``offset .. offset+time-1``; the offset
lets incremental decoding ask for the position of the step it is at.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalPositionalEncoding(nn.Module):
    """Vaswani et al.'s fixed sines and cosines: no parameters, any length up to ``max_len``."""

    def __init__(self, dim: int, max_len: int = 1024) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div[: dim // 2])
        # Not persistent: it is recomputed on construction, so checkpoints stay small.
        self.register_buffer("table", table, persistent=False)
        self.max_len = max_len

    def forward(self, length: int, offset: int = 0) -> Tensor:
        return self.table[offset : offset + length]


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


def make_positional(kind: str, dim: int, max_len: int) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(dim, max_len)
    if kind == "learned":
        return LearnedPositionalEmbedding(dim, max_len)
    raise ValueError(f"unknown positional encoding {kind!r}; use 'sinusoidal' or 'learned'")
