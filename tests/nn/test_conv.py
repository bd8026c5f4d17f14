"""Convolutions over padded batches give each row's own result, and are plain torch convs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqformer.nn.conv import ConvEncoder, MultiWidthConv


def batch() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    torch.manual_seed(0)
    lengths = [6, 4, 1]
    x = torch.randn(3, 6, 5)
    mask = torch.arange(6).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
    return x.masked_fill(mask.unsqueeze(-1), 123.0), mask, lengths  # junk where padded


def test_conv_encoder_rows_equal_each_row_alone() -> None:
    torch.manual_seed(1)
    encoder = ConvEncoder(5, 8, layers=3, kernel_size=3, dropout=0.0, max_len=16).eval()
    x, mask, lengths = batch()
    out = encoder(x, mask)
    for row, n in enumerate(lengths):
        alone = encoder(x[row : row + 1, :n], None)
        torch.testing.assert_close(out[row : row + 1, :n], alone, atol=1e-6, rtol=1e-5)
        assert bool((out[row, n:] == 0).all())


def test_multi_width_conv_is_max_over_time_of_relu_convs() -> None:
    """Reference: F.conv1d on each unpadded row with width-1 zeros each side, ReLU, max."""
    torch.manual_seed(2)
    features = MultiWidthConv(5, 4, [1, 2, 3])
    x, mask, lengths = batch()
    out = features(x, mask)
    assert out.shape == (3, 12)
    for row, n in enumerate(lengths):
        expected = []
        for width, conv in zip([1, 2, 3], features.convs):
            y = F.conv1d(x[row : row + 1, :n].transpose(1, 2), conv.weight, conv.bias,
                         padding=width - 1)
            expected.append(y.relu().amax(-1))
        torch.testing.assert_close(out[row : row + 1], torch.cat(expected, -1), atol=1e-6,
                                   rtol=1e-5)
