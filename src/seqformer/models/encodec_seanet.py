"""EnCodec's SEANet encoder and decoder (Tagliasacchi et al. 2020; Défossez et al. 2022).

Encoder: a kernel-7 conv to ``num_filters`` channels, then per ratio of ``reversed(
upsampling_ratios)`` residual blocks (dilations 1, growth, growth^2, ...) and a strided conv
(kernel 2 x ratio) that halves time by the ratio and doubles the channels; a 2-layer LSTM with a
skip connection over the lowest-rate sequence; ELU; a conv to ``hidden_size``, the latent the
quantizer codes. One latent frame is ``prod(upsampling_ratios)`` samples (320 = 13.3 ms at
24 kHz). The decoder mirrors it with transposed convs.

Padding is what makes a codec usable on any length and, when causal, in streaming:

- every conv pads ``kernel_eff - stride`` samples in total, all on the left when causal, else
  split (the extra sample of an odd total on the left), with ``pad_mode`` (reflect by default;
  a signal shorter than the pad is zero-extended first so reflection is defined), plus zeros on
  the right up to a multiple of the stride, so a signal of L samples gives ceil(L / stride)
  frames and none is lost;
- a transposed conv (kernel 2 x stride) makes (T + 1) x stride samples; the stride in excess is
  trimmed: all on the right when causal (``trim_right_ratio`` of it, in general), else half on
  each side. The decoder thus returns frames x hop samples; the caller cuts them to the input
  length, since the encoder's right zero-padding is not recorded per layer.

The module tree (``layers`` lists with the ELUs as entries, ``conv`` inside each padded conv,
``block`` / ``shortcut`` in residual blocks, ``lstm``) is Hugging Face's ``EncodecEncoder`` /
``EncodecDecoder`` one, so their weights keep their names; ``norm_type`` is ``weight_norm``
(torch's parametrization: ``conv.parametrizations.weight.original0`` / ``original1``) or
``time_group_norm`` (a one-group GroupNorm after the conv).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def pad1d(x: Tensor, left: int, right: int, mode: str) -> Tensor:
    """``F.pad`` on the last axis; reflection of a signal no longer than the pad (which torch
    refuses) reflects a zero-extended copy instead, then drops the extension."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode)
    extra = max(0, max(left, right) - x.shape[-1] + 1)
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), "reflect")
    return padded[..., :padded.shape[-1] - extra]


class PaddedConv1d(nn.Module):
    """Conv1d that pads itself so L samples give ceil(L / stride) frames (see the module
    docstring), with weight norm or a time group norm."""

    def __init__(self, config: Any, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.causal, self.pad_mode, self.norm_type = (config.use_causal_conv, config.pad_mode,
                                                      config.norm_type)
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.conv = weight_norm(conv) if self.norm_type == "weight_norm" else conv
        if self.norm_type == "time_group_norm":
            self.norm = nn.GroupNorm(1, out_channels)
        self.stride = stride
        self.padding_total = (kernel_size - 1) * dilation + 1 - stride

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        extra = math.ceil(length / self.stride) * self.stride - length  # last frame complete
        if self.causal:
            left, right = self.padding_total, 0
        else:
            right = self.padding_total // 2
            left = self.padding_total - right
        x = self.conv(pad1d(x, left, right + extra, self.pad_mode))
        return self.norm(x) if self.norm_type == "time_group_norm" else x


class TrimmedConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed of its ``kernel - stride`` excess samples, so T frames give
    T x stride samples."""

    def __init__(self, config: Any, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int) -> None:
        super().__init__()
        self.causal, self.norm_type = config.use_causal_conv, config.norm_type
        self.trim_right_ratio = config.trim_right_ratio
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.conv = weight_norm(conv) if self.norm_type == "weight_norm" else conv
        if self.norm_type == "time_group_norm":
            self.norm = nn.GroupNorm(1, out_channels)
        self.padding_total = kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_type == "time_group_norm":
            x = self.norm(x)
        if self.causal:
            right = math.ceil(self.padding_total * self.trim_right_ratio)
        else:
            right = self.padding_total // 2
        left = self.padding_total - right
        return x[..., left:x.shape[-1] - right]


class SkipLSTM(nn.Module):
    """An LSTM over (B, C, T) with the input added to its output: long-range context at the
    lowest frame rate, cheap because the sequence is short there."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)
        return (self.lstm(x)[0] + x).permute(1, 2, 0)


class ResidualBlock(nn.Module):
    """ELU -> dilated conv to dim / compress -> ELU -> 1x1 conv back, plus the input (through a
    1x1 conv when ``use_conv_shortcut``)."""

    def __init__(self, config: Any, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // config.compress
        self.block = nn.ModuleList([
            nn.ELU(), PaddedConv1d(config, dim, hidden, config.residual_kernel_size,
                                   dilation=dilation),
            nn.ELU(), PaddedConv1d(config, hidden, dim, 1)])
        self.shortcut: nn.Module = (PaddedConv1d(config, dim, dim, 1) if config.use_conv_shortcut
                                    else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.block:
            y = layer(y)
        return self.shortcut(x) + y


def _residual_blocks(config: Any, dim: int) -> list[nn.Module]:
    return [ResidualBlock(config, dim, config.dilation_growth_rate ** j)
            for j in range(config.num_residual_layers)]


class SEANetEncoder(nn.Module):
    """(B, audio_channels, samples) -> (B, hidden_size, ceil(samples / hop))."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        f = config.num_filters
        layers: list[nn.Module] = [PaddedConv1d(config, config.audio_channels, f,
                                                config.kernel_size)]
        scale = 1
        for ratio in reversed(config.upsampling_ratios):
            layers += _residual_blocks(config, scale * f)
            layers += [nn.ELU(), PaddedConv1d(config, scale * f, 2 * scale * f, 2 * ratio,
                                              stride=ratio)]
            scale *= 2
        layers += [SkipLSTM(scale * f, config.num_lstm_layers), nn.ELU(),
                   PaddedConv1d(config, scale * f, config.hidden_size, config.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SEANetDecoder(nn.Module):
    """(B, hidden_size, frames) -> (B, audio_channels, frames x hop)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        f, scale = config.num_filters, 2 ** len(config.upsampling_ratios)
        layers: list[nn.Module] = [
            PaddedConv1d(config, config.hidden_size, scale * f, config.kernel_size),
            SkipLSTM(scale * f, config.num_lstm_layers)]
        for ratio in config.upsampling_ratios:
            layers += [nn.ELU(), TrimmedConvTranspose1d(config, scale * f, scale * f // 2,
                                                        2 * ratio, ratio)]
            layers += _residual_blocks(config, scale * f // 2)
            scale //= 2
        layers += [nn.ELU(), PaddedConv1d(config, f, config.audio_channels,
                                          config.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
