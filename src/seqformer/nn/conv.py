"""1D convolutions over token sequences, with padding that never changes a real position.

Two shapes of the same idea (embeddings as channels, a kernel sliding over time):

- :class:`ConvEncoder`: a stack of gated residual convolutions (Gehring et al., 2017, ConvS2S)
  that keeps one vector per source position, as a seq2seq encoder.
- :class:`MultiWidthConv`: parallel convolutions of several widths, ReLU, max over time (Kim,
  2014), one fixed-size vector per sequence, as a classifier's feature extractor.

Both zero the padded positions before convolving: a kernel overlapping the end of a short row
then sees the same zeros it would see as the convolution's own padding of that row alone, which
is what makes a padded batch give exactly the outputs of each row on its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqformer.nn.positional import LearnedPositionalEmbedding


def zero_padding(x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """``x`` (batch, time, dim) with the rows' padded positions set to 0."""
    return x if padding_mask is None else x.masked_fill(padding_mask.unsqueeze(-1), 0.0)


class ConvEncoder(nn.Module):
    """Embeddings -> linear to ``hidden`` + learned positions -> ``layers`` x [dropout, conv
    (``kernel_size``, centred), GLU, residual scaled by sqrt(1/2)].

    A convolution alone only knows relative order within its window; the learned positions give
    the decoder's attention absolute places to look. The sqrt(1/2) keeps the residual sum's
    variance from doubling per layer (ConvS2S).
    """

    def __init__(self, embed_dim: int, hidden: int, layers: int, kernel_size: int,
                 dropout: float, max_len: int) -> None:
        super().__init__()
        self.project = nn.Linear(embed_dim, hidden)
        self.positions = LearnedPositionalEmbedding(hidden, max_len)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, kernel_size,
                                             padding=kernel_size // 2) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, embedded: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(batch, time, embed_dim) -> (batch, time, hidden), zero at padding."""
        x = self.project(embedded) + self.positions(embedded.shape[1])
        for conv in self.convs:
            y = conv(self.dropout(zero_padding(x, padding_mask)).transpose(1, 2))
            x = (x + nn.functional.glu(y, dim=1).transpose(1, 2)) * math.sqrt(0.5)
        return zero_padding(x, padding_mask)


class MultiWidthConv(nn.Module):
    """Convolutions of each width in ``widths`` -> ReLU -> max over real time -> concatenated.

    "Wide" convolutions (``width - 1`` zeros on both sides) give every row at least one window,
    whatever its length; windows that hold only padding are excluded from the max.
    """

    def __init__(self, in_dim: int, channels: int, widths: list[int]) -> None:
        super().__init__()
        self.widths = list(widths)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, channels, w, padding=w - 1)
                                   for w in self.widths)
        self.out_dim = channels * len(self.widths)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(batch, time, in_dim) -> (batch, channels * len(widths))."""
        lengths = (x.new_full(x.shape[:1], x.shape[1]) if padding_mask is None
                   else (~padding_mask).sum(1).clamp(min=1))
        channels_first = zero_padding(x, padding_mask).transpose(1, 2)
        pooled = []
        for width, conv in zip(self.widths, self.convs):
            y = conv(channels_first).relu()  # (batch, channels, time + width - 1)
            # Output t covers inputs t-width+1 .. t: it touches a real token iff t < len+width-1.
            positions = torch.arange(y.shape[-1], device=x.device)
            empty = positions.unsqueeze(0) >= (lengths + width - 1).unsqueeze(1)
            pooled.append(y.masked_fill(empty.unsqueeze(1), float("-inf")).amax(dim=-1))
        return torch.cat(pooled, dim=-1)
