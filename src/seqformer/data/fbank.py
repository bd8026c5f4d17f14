"""Kaldi-style log-mel filterbank features, the input of the Audio Spectrogram Transformer.

What AST (``torchaudio.compliance.kaldi.fbank`` with a Hanning window) and Hugging Face's
``ASTFeatureExtractor`` compute, here in torch so it runs wherever the model does: frames of
25 ms every 10 ms with no padding at the edges (Kaldi's ``snip_edges``), each frame's DC offset
removed, pre-emphasis 0.97, a symmetric Hann window, a zero-padded FFT (512 points at 16 kHz),
the power spectrum through ``num_mel_bins`` triangular filters on Kaldi's mel scale
(1127 ln(1 + f / 700), triangles drawn in mel space, 20 Hz to Nyquist), then the natural log
with a floor of float32 epsilon. ``tests/data/test_fbank.py`` checks it against
``transformers.audio_utils.spectrogram`` with ASTFeatureExtractor's own settings.

Then, as ASTFeatureExtractor does: pad with zeros or crop to ``max_frames`` and normalise as
``(x - mean) / (2 * std)`` (AST's convention, so an imported model's ``mean`` / ``std`` apply
unchanged). :class:`Fbank` carries every setting, and is saved as ``features`` in
``config.json`` so inference repeats training exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqformer.errors import ConfigError

# Kaldi floors the mel energies at float32 epsilon before the log.
MEL_FLOOR = float(np.finfo(np.float32).eps)


def kaldi_mel(hz: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_filters(num_mel_bins: int, n_fft: int, sample_rate: int, low_freq: float = 20.0,
                high_freq: float | None = None) -> Tensor:
    """(n_fft // 2 + 1, num_mel_bins) float64 matrix: power spectrum -> mel energies.

    Kaldi's bank: centres equally spaced in mel between ``low_freq`` and ``high_freq``
    (Nyquist by default), and each triangle linear *in mel* between its neighbours' centres
    (torchaudio's and HF's ``triangularize_in_mel_space``), unnormalised."""
    high = sample_rate / 2 if high_freq is None else high_freq
    if not 0 <= low_freq < high <= sample_rate / 2:
        raise ConfigError(f"mel filters need 0 <= low_freq ({low_freq}) < high_freq ({high}) "
                          f"<= sample_rate / 2 ({sample_rate / 2})")
    edges = torch.linspace(float(kaldi_mel(torch.tensor(float(low_freq), dtype=torch.float64))),
                           float(kaldi_mel(torch.tensor(float(high), dtype=torch.float64))),
                           num_mel_bins + 2, dtype=torch.float64)
    bins = kaldi_mel(torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - left) / (centre - left)
    falling = (right - bins[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


@dataclass(frozen=True)
class Fbank:
    """Waveform (16 kHz by default, floats in [-1, 1]) -> normalised (max_frames, num_mel_bins)
    features. ``mean`` / ``std`` are fitted on the training features (:meth:`fit`)."""

    num_mel_bins: int = 128
    max_frames: int = 100
    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    preemphasis: float = 0.97
    mean: float = 0.0
    std: float = 0.5  # (x - 0) / (2 * 0.5): the identity until fitted

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "max_frames", "sample_rate"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"features.{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ConfigError("features: need 0 < frame_shift_ms <= frame_length_ms")
        if not self.std > 0:
            raise ConfigError(f"features.std must be > 0, got {self.std}")
        if self.frame_length < 2:
            raise ConfigError(f"features: a {self.frame_length_ms} ms frame at "
                              f"{self.sample_rate} Hz is under two samples")

    @property
    def frame_length(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:
        """The frame length rounded up to a power of two (Kaldi's ``round_to_power_of_two``)."""
        return 1 << math.ceil(math.log2(self.frame_length))

    def frames_for(self, samples: int) -> int:
        """Frames of a waveform of ``samples`` samples (at least one: short input is padded)."""
        return 1 + max(0, samples - self.frame_length) // self.frame_shift

    def log_mel(self, waveform: Tensor | np.ndarray) -> Tensor:
        """(frames, num_mel_bins) float32 log-mel energies of one mono waveform, unpadded and
        unnormalised. Computed in float64 (as Kaldi's and HF's references are) for parity."""
        x = torch.as_tensor(np.asarray(waveform), dtype=torch.float64).reshape(1, -1)
        return self._log_mel_batch(x)[0]

    def _log_mel_batch(self, x: Tensor) -> Tensor:
        """(N, frames, num_mel_bins) of N equally long float64 waveforms (N, samples)."""
        if x.shape[1] < self.frame_length:  # one frame of what there is, zero-padded
            x = torch.nn.functional.pad(x, (0, self.frame_length - x.shape[1]))
        frames = x.unfold(1, self.frame_length, self.frame_shift)  # (N, frames, frame_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)  # remove DC offset
        if self.preemphasis:
            frames = torch.cat([frames[..., :1] * (1 - self.preemphasis),
                                frames[..., 1:] - self.preemphasis * frames[..., :-1]], dim=-1)
        frames = frames * torch.hann_window(self.frame_length, periodic=False,
                                            dtype=torch.float64)
        power = torch.fft.rfft(frames, n=self.n_fft).abs() ** 2
        mel = power @ self._filters()
        return torch.log(mel.clamp(min=MEL_FLOOR)).float()

    def _filters(self) -> Tensor:
        # Cached per instance: the bank depends only on frozen fields.
        cached = self.__dict__.get("_bank")
        if cached is None:
            cached = mel_filters(self.num_mel_bins, self.n_fft, self.sample_rate, self.low_freq)
            object.__setattr__(self, "_bank", cached)
        return cached

    def pad_or_crop(self, log_mel: Tensor) -> Tensor:
        """(max_frames, num_mel_bins): zeros appended (in the log domain, as ASTFeatureExtractor
        does) or the tail cut off."""
        n = log_mel.shape[0]
        if n >= self.max_frames:
            return log_mel[: self.max_frames]
        return torch.nn.functional.pad(log_mel, (0, 0, 0, self.max_frames - n))

    def normalise(self, features: Tensor) -> Tensor:
        return (features - self.mean) / (2 * self.std)

    def raw(self, waveforms: list[np.ndarray] | list[Tensor]) -> Tensor:
        """(N, max_frames, num_mel_bins) padded/cropped log-mel, before normalisation."""
        if not len(waveforms):
            return torch.zeros(0, self.max_frames, self.num_mel_bins)
        out = torch.empty(len(waveforms), self.max_frames, self.num_mel_bins)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(waveforms):
            by_length.setdefault(int(np.asarray(w).size), []).append(i)
        for indices in by_length.values():  # one batched FFT per length, 256 clips at a time
            for start in range(0, len(indices), 256):
                part = indices[start:start + 256]
                x = torch.stack([torch.as_tensor(np.asarray(waveforms[i]),
                                                 dtype=torch.float64).reshape(-1) for i in part])
                for i, mel in zip(part, self._log_mel_batch(x)):
                    out[i] = self.pad_or_crop(mel)
        return out

    def __call__(self, waveforms: list[np.ndarray] | list[Tensor]) -> Tensor:
        """(N, max_frames, num_mel_bins) model input of N waveforms (any lengths)."""
        return self.normalise(self.raw(waveforms))

    def fit(self, raw: Tensor) -> Fbank:
        """This filterbank with ``mean`` / ``std`` of ``raw`` features (the training split's,
        as :meth:`raw` returns them): one scalar each, as AST uses."""
        import dataclasses

        std = max(float(raw.std()), 1e-6) if raw.numel() > 1 else 0.5
        return dataclasses.replace(self, mean=float(raw.mean()) if raw.numel() else 0.0,
                                   std=std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "features") -> Fbank:
        from seqformer.config import from_dict

        return from_dict(cls, data, where, "features.")
