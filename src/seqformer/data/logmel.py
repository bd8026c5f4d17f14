"""Whisper's log-mel spectrogram in torch: what ``WhisperFeatureExtractor`` computes.

A 16 kHz waveform -> STFT with a periodic Hann window of ``n_fft`` = 400 samples (25 ms) every
``hop_length`` = 160 samples (10 ms), centred (reflect padding of n_fft / 2 at both ends), the
last frame dropped -> power spectrum -> ``n_mels`` (80) triangular filters on the Slaney mel
scale (linear below 1 kHz, logarithmic above) between 0 and 8 kHz with Slaney's area
normalisation -> log10 with a floor of 1e-10 -> values below (the utterance's maximum - 8)
raised to it (an 80 dB dynamic range) -> (x + 4) / 4, which puts speech roughly in [-1, 1].
``tests/data/test_logmel.py`` checks it against the feature extractor's numpy path.

Padding, and the departure from Whisper: Whisper pads (or cuts) every input to 30 s of audio
(3000 frames) and lets the model ignore the silence. Our utterances are single words of 0.3-1.5
s, so 30 s windows would make the encoder 20-100 times more expensive (and its attention
quadratically so) for nothing. :meth:`LogMel.batch` pads a batch only to its longest utterance,
with zeros *after* the features are computed, and returns the frame counts; the model zeroes and
masks those frames (``models/whisper.py``), so padding never changes a transcription. The
clamp to max - 8 is computed per utterance from its own frames only, as the feature extractor
does for an unpadded input.

An imported Whisper is the exception (``pad_to_frames``, set by ``interop/hf_whisper.py``): it
was trained on 30 s windows only, its encoder is never told where speech ends, and its outputs
on a bare word differ from those on the padded window HF feeds it. There the waveform itself is
zero-padded to ``pad_to_frames * hop_length`` samples *before* the STFT, exactly as
``WhisperFeatureExtractor`` pads, so the silence is log-mel of zeros (floored at max - 8), the
last speech frames see zeros rather than a reflection, and the clamp sees the whole window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqformer.errors import ConfigError, DataError


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: 3 mels per 200 Hz below 1 kHz, then log-spaced (27 / ln 6.4 mels
    per natural-log unit)."""
    log_step = 27.0 / math.log(6.4)
    return torch.where(hz < 1000.0, 3.0 * hz / 200.0,
                       15.0 + torch.log(hz.clamp(min=1e-10) / 1000.0) * log_step)


def mel_to_hz(mel: Tensor) -> Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * torch.exp(log_step * (mel - 15.0)))


def mel_filters(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                f_max: float = 8000.0) -> Tensor:
    """(n_fft // 2 + 1, n_mels) float64: triangles on the FFT bins with corners equally spaced
    in Slaney mel, each scaled by 2 / (its width in Hz) so every filter has the same area."""
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(f"mel filters need 0 <= f_min ({f_min}) < f_max ({f_max}) <= "
                          f"sample_rate / 2 ({sample_rate / 2})")
    corners = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                                       float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64))),
                                       n_mels + 2, dtype=torch.float64))
    fft_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    widths = corners.diff()
    slopes = corners.unsqueeze(0) - fft_hz.unsqueeze(1)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return bank * (2.0 / (corners[2:] - corners[:-2]))


@dataclass(frozen=True)
class LogMel:
    """Whisper's feature settings; saved as ``features`` in a model's ``config.json`` so
    inference computes exactly what training did."""

    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    sample_rate: int = 16000
    f_max: float = 8000.0
    # 0: features of the waveform as it is (our trained models). N > 0: the waveform is first
    # zero-padded to N frames' worth of samples, as WhisperFeatureExtractor pads to 30 s
    # (imported Whispers: N = 3000). Left out of to_dict when 0, so trained runs' config.json
    # stay as they were.
    pad_to_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_fft", "hop_length", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"features.{name} must be a positive integer, got {value!r}")
        if (not isinstance(self.pad_to_frames, int) or isinstance(self.pad_to_frames, bool)
                or self.pad_to_frames < 0):
            raise ConfigError("features.pad_to_frames must be an integer >= 0 (0 = no padding), "
                              f"got {self.pad_to_frames!r}")
        if self.hop_length > self.n_fft:
            raise ConfigError(f"features.hop_length={self.hop_length} must be <= "
                              f"features.n_fft={self.n_fft}")

    @property
    def min_samples(self) -> int:
        """The centred STFT reflects n_fft / 2 samples at each end, so it needs more than that."""
        return self.n_fft // 2 + 1

    def filters(self) -> Tensor:
        return mel_filters(self.n_mels, self.n_fft, self.sample_rate, 0.0,
                           min(self.f_max, self.sample_rate / 2))

    def frames(self, samples: int) -> int:
        """Frames of a waveform of ``samples`` samples (1 + samples // hop, the last dropped)."""
        return samples // self.hop_length

    def __call__(self, waveform: np.ndarray | Tensor, where: str = "audio") -> Tensor:
        """(n_mels, frames) float32 features of one mono waveform in [-1, 1] at
        ``sample_rate``. Computed in float64 so the result matches the numpy reference to
        float32 precision. With ``pad_to_frames`` a shorter waveform is zero-padded to that
        many frames first (a longer one is left for the caller to refuse)."""
        wave = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, Tensor)
                               else waveform).to(torch.float64).flatten()
        short = self.pad_to_frames * self.hop_length - wave.numel()
        if short > 0:
            wave = torch.nn.functional.pad(wave, (0, short))
        if wave.numel() < max(self.min_samples, self.hop_length):
            raise DataError(f"{where}: {wave.numel()} samples is too short for features "
                            f"(at least {max(self.min_samples, self.hop_length)} at "
                            f"{self.sample_rate} Hz)")
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        stft = torch.stft(wave, self.n_fft, self.hop_length, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = stft[:, :-1].abs() ** 2
        mel = self.filters().T @ power
        log_spec = mel.clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).to(torch.float32)

    def batch(self, waveforms: list[np.ndarray | Tensor], where: list[str] | None = None
              ) -> tuple[Tensor, Tensor]:
        """Features (batch, n_mels, longest) zero-padded after each utterance, and the frame
        counts (batch,)."""
        feats = [self(w, where[i] if where else f"audio {i + 1}")
                 for i, w in enumerate(waveforms)]
        return pad_features(feats)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.pad_to_frames:
            del data["pad_to_frames"]
        return {"kind": "whisper-logmel", **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LogMel:
        data = dict(data or {})
        data.pop("kind", None)
        return cls(**data)


def pad_features(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack (n_mels, frames_i) features into (batch, n_mels, max frames), zeros after each."""
    lengths = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
    out = torch.zeros(len(feats), feats[0].shape[0], int(lengths.max()))
    for i, f in enumerate(feats):
        out[i, :, : f.shape[1]] = f
    return out, lengths
