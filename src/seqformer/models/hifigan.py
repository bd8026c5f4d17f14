"""The HiFi-GAN generator (Kong, Kim & Bae 2020) in the layout of Hugging Face's
``SpeechT5HifiGan``: a log-mel spectrogram (``data/tts_mel.py``) in, a waveform out.

``conv_pre`` (kernel 7) lifts the mel bins to ``upsample_initial_channel`` channels; each
upsampling stage is a leaky ReLU and a ``ConvTranspose1d`` (stride = its rate, channels halved)
followed by a multi-receptive-field fusion: the mean of one residual block per kernel size,
each block three (leaky ReLU, dilated conv, leaky ReLU, conv) units with skip connections.
Then leaky ReLU, ``conv_post`` to one channel and tanh. The rates multiply to the hop, so
``frames`` frames become ``frames * hop_length`` samples.

Details kept for exact parity with HF (``tests/interop/test_hf_hifigan.py``): with
``normalize_before`` the input is standardised by the saved ``mean`` / ``scale`` buffers
(SpeechT5's vocoder was trained on normalised spectrograms, the TTS model predicts raw ones);
the last leaky ReLU has torch's default slope 0.01, not ``leaky_relu_slope``; module names are
HF's, so the state dicts map one to one. Weight normalisation, a training-time device, is
folded into plain weights, as in HF's published checkpoint (``interop/hf_hifigan.py`` folds a
checkpoint saved with it). Training the GAN is out of scope: this is an inference model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel


@dataclass(frozen=True)
class HiFiGANConfig:
    """Shape of the generator; defaults are ``microsoft/speecht5_hifigan``'s (80 mel bins,
    16 kHz, 4 x 4 x 4 x 4 = 256 samples per frame)."""

    num_mel_bins: int = 80
    sampling_rate: int = 16000
    upsample_initial_channel: int = 512
    upsample_rates: tuple[int, ...] = (4, 4, 4, 4)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 8, 8)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    leaky_relu_slope: float = 0.1
    normalize_before: bool = True

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "sampling_rate", "upsample_initial_channel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        rates, kernels = self.upsample_rates, self.upsample_kernel_sizes
        if not rates or len(rates) != len(kernels):
            raise ConfigError(f"model.upsample_rates ({len(rates)}) and "
                              f"model.upsample_kernel_sizes ({len(kernels)}) must be non-empty "
                              "and equally long")
        for rate, kernel in zip(rates, kernels):
            # (kernel - rate) even: the transposed conv then outputs exactly rate x its input.
            if rate < 1 or kernel < rate or (kernel - rate) % 2:
                raise ConfigError(f"model: upsample rate {rate} with kernel {kernel}; need "
                                  "kernel >= rate >= 1 and kernel - rate even")
        if self.upsample_initial_channel % (2 ** len(rates)):
            raise ConfigError(f"model.upsample_initial_channel={self.upsample_initial_channel} "
                              f"must be divisible by 2^{len(rates)} (halved per stage)")
        if not self.resblock_kernel_sizes or (len(self.resblock_kernel_sizes)
                                              != len(self.resblock_dilation_sizes)):
            raise ConfigError("model.resblock_kernel_sizes and model.resblock_dilation_sizes "
                              "must be non-empty and equally long")
        if any(k < 1 or k % 2 == 0 for k in self.resblock_kernel_sizes) or any(
                not d or min(d) < 1 for d in self.resblock_dilation_sizes):
            raise ConfigError("model: residual kernels must be odd and dilations >= 1 (a "
                              "centred, length-preserving conv)")

    @property
    def hop_length(self) -> int:
        """Samples per spectrogram frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)


class ResBlock(nn.Module):
    """Three (leaky ReLU, dilated conv, leaky ReLU, conv, + input) units; padding keeps the
    length. HF's ``HifiGanResidualBlock`` layout (``convs1`` dilated, ``convs2`` not)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...],
                 slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d,
                                              padding=d * (kernel - 1) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel,
                                              padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            h = conv1(F.leaky_relu(x, self.slope))
            x = x + conv2(F.leaky_relu(h, self.slope))
        return x


class HiFiGAN(nn.Module, SavedModel):
    """log-mel (frames, bins) or (batch, frames, bins) -> waveform (samples,) or (batch,
    samples), HF's convention; family ``hifigan``. ``features`` in config.json records the
    mel settings (``TTSMel.to_dict()``) it expects."""

    family: ClassVar[str] = "hifigan"
    description: ClassVar[str] = "a HiFi-GAN vocoder"
    config_class: ClassVar[type] = HiFiGANConfig
    settings_key: ClassVar[str] = "features"

    def __init__(self, config: HiFiGANConfig) -> None:
        super().__init__()
        self.config = c = config
        self.conv_pre = nn.Conv1d(c.num_mel_bins, c.upsample_initial_channel, 7, padding=3)
        self.upsampler = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = c.upsample_initial_channel
        for rate, kernel in zip(c.upsample_rates, c.upsample_kernel_sizes):
            self.upsampler.append(nn.ConvTranspose1d(channels, channels // 2, kernel,
                                                     stride=rate, padding=(kernel - rate) // 2))
            channels //= 2
            for size, dilations in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(channels, size, tuple(dilations),
                                               c.leaky_relu_slope))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)
        self.register_buffer("mean", torch.zeros(c.num_mel_bins))
        self.register_buffer("scale", torch.ones(c.num_mel_bins))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """HF's init (N(0, 0.01) conv weights, zero biases); mean 0, scale 1."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.mean)
        nn.init.ones_(self.scale)

    def forward(self, log_mel: Tensor) -> Tensor:
        batched = log_mel.dim() == 3
        if log_mel.dim() not in (2, 3) or log_mel.shape[-1] != self.config.num_mel_bins:
            raise ValueError(f"expected (batch?, frames, {self.config.num_mel_bins}) log-mel, "
                             f"got shape {tuple(log_mel.shape)}")
        if self.config.normalize_before:
            log_mel = (log_mel - self.mean) / self.scale
        x = self.conv_pre((log_mel if batched else log_mel.unsqueeze(0)).transpose(1, 2))
        kinds = len(self.config.resblock_kernel_sizes)
        slope = self.config.leaky_relu_slope
        for i, up in enumerate(self.upsampler):
            x = up(F.leaky_relu(x, slope))
            blocks = self.resblocks[i * kinds:(i + 1) * kinds]
            fused = blocks[0](x)
            for block in blocks[1:]:
                fused = fused + block(x)
            x = fused / kinds
        wave = torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)  # default slope: HF's
        return wave if batched else wave.squeeze(0)

    def output_length(self, frames: int) -> int:
        return frames * self.config.hop_length
