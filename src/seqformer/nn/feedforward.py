"""The position-wise feed-forward network applied to every token independently."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    # GPT-2's "gelu_new": the tanh approximation its checkpoints were trained with.
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    # SiLU, a.k.a. swish (Marian / opus-mt).
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> linear; it holds most of a layer's parameters."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.linear1(x))
        return self.linear2(self.dropout(h) if self.training else h)  # eval: skip the no-op
