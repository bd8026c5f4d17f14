"""Residual connection with layer normalisation, in both classic arrangements.

post-LN ("Add & Normalize", Vaswani et al. 2017): ``norm(x + sublayer(x))``.
pre-LN (GPT-2, most modern models): ``x + sublayer(norm(x))``; it trains stably without a long
warm-up because the residual path is never normalised away.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class Residual(nn.Module):
    """Wrap one sub-layer with dropout, the skip connection and a LayerNorm."""

    def __init__(self, dim: int, dropout: float, norm_first: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        # Dropout is the identity in eval mode; skipping the module call there matters when
        # decoding small models, where per-call overhead is a large share of each step.
        drop = self.dropout if self.training else _identity
        if self.norm_first:
            return x + drop(sublayer(self.norm(x)))
        return self.norm(x + drop(sublayer(x)))


def _identity(x: Tensor) -> Tensor:
    return x
