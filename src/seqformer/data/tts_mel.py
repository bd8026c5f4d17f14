"""SpeechT5's target log-mel spectrogram in torch: what a text-to-speech model predicts and a
vocoder turns back into a waveform.

What ``SpeechT5FeatureExtractor(...)(audio_target=wave)`` computes (``tests/data/
test_tts_mel.py`` checks it against the extractor itself): the waveform (float32, 16 kHz) is
reflect-padded by half a window at both ends (``center``), cut into windows of ``win_length``
ms (1024 samples) every ``hop_length`` ms (256 samples), each multiplied by a periodic Hann
window and zero-padded at its *end* to ``n_fft`` (the window rounded up to a power of two; equal
to it by default). The *magnitude* (not power) spectrum goes through ``num_mel_bins`` (80)
triangles on the Slaney mel scale between ``fmin`` = 80 Hz and ``fmax`` = 7600 Hz with
Slaney's area normalisation, is floored at ``mel_floor`` = 1e-10 and put through log10. Targets
are not normalised (the extractor's ``do_normalize`` only touches waveform *inputs*; a vocoder
brings its own mean / scale). A waveform of ``n`` samples gives ``1 + n // hop`` frames: no
frame is dropped, unlike Whisper's.

Why not ``torch.stft``: it centres a window shorter than ``n_fft`` inside the FFT buffer, and
pads by ``n_fft / 2`` rather than half the window, so it only matches the extractor when the
two are equal; and ``torch.istft`` refuses uncentred Hann frames (the window's zero first
sample fails its overlap check). :meth:`TTSMel.stft` / :meth:`TTSMel.istft` frame explicitly,
so Griffin-Lim (``decoding/vocoder.py``) inverts exactly the framing the targets were made
with, and lengths line up by construction.

:class:`TTSMel` carries every setting under the extractor's own names, so it is saved as
``features`` in a model's ``config.json`` and read from a ``preprocessor_config.json``
(:meth:`TTSMel.from_hf`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seqformer.data.logmel import mel_filters
from seqformer.errors import ConfigError, DataError

KIND = "speecht5-mel"
WINDOWS = {"hann_window": "hann", "hann": "hann", "hamming_window": "hamming",
           "hamming": "hamming"}
# The preprocessor_config.json keys that are ours too (same names, same meaning).
HF_KEYS = ("sampling_rate", "num_mel_bins", "hop_length", "win_length", "win_function", "fmin",
           "fmax", "mel_floor")


@dataclass(frozen=True)
class TTSMel:
    """Settings of SpeechT5's target spectrogram; defaults are SpeechT5FeatureExtractor's.
    ``hop_length`` and ``win_length`` are in milliseconds, as the extractor has them."""

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    hop_length: int = 16
    win_length: int = 64
    win_function: str = "hann_window"
    fmin: float = 80.0
    fmax: float = 7600.0
    mel_floor: float = 1e-10

    def __post_init__(self) -> None:
        for name in ("sampling_rate", "num_mel_bins", "hop_length", "win_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"features.{name} must be a positive integer, got {value!r}")
        if self.win_function not in WINDOWS:
            raise ConfigError(f"features.win_function={self.win_function!r}; use one of "
                              f"{', '.join(WINDOWS)}")
        if not 0.0 <= self.fmin < self.fmax <= self.sampling_rate / 2:
            raise ConfigError(f"features: need 0 <= fmin ({self.fmin}) < fmax ({self.fmax}) <= "
                              f"sampling_rate / 2 ({self.sampling_rate / 2})")
        if not self.mel_floor > 0:
            raise ConfigError(f"features.mel_floor must be > 0, got {self.mel_floor}")
        if not 0 < self.hop_samples <= self.win_samples:
            raise ConfigError(f"features: hop_length={self.hop_length} ms must be > 0 samples "
                              f"and <= win_length={self.win_length} ms")

    # -- derived sizes (the extractor's sample_stride, sample_size, n_fft) ------------------

    @property
    def hop_samples(self) -> int:
        return self.hop_length * self.sampling_rate // 1000

    @property
    def win_samples(self) -> int:
        return self.win_length * self.sampling_rate // 1000

    @property
    def n_fft(self) -> int:
        """The window rounded up to a power of two (the extractor's ``optimal_fft_length``)."""
        return 1 << (self.win_samples - 1).bit_length()

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def frames_for(self, num_samples: int) -> int:
        """Frames of a waveform of ``num_samples`` samples: the centred framing pads half a
        window at each end, so ``1 + num_samples // hop`` for an even window."""
        pad = self.win_samples // 2
        return 1 + (num_samples + 2 * pad - self.win_samples) // self.hop_samples

    def samples_for(self, frames: int) -> int:
        """The shortest waveform that has ``frames`` frames (what Griffin-Lim returns)."""
        pad = self.win_samples // 2
        return max(2, (frames - 1) * self.hop_samples + self.win_samples - 2 * pad)

    # -- the filterbank and window -------------------------------------------------------------

    @cached_property
    def filters(self) -> Tensor:
        """(n_freqs, num_mel_bins) float64: magnitude spectrum -> mel energies (Slaney scale and
        area norm). Cached on the (frozen) instance; Griffin-Lim inverts it."""
        return mel_filters(self.num_mel_bins, self.n_fft, self.sampling_rate, float(self.fmin),
                           float(self.fmax))

    @cached_property
    def window(self) -> Tensor:
        """(win_samples,) float64 periodic window, as the extractor's ``window_function``."""
        make = torch.hann_window if WINDOWS[self.win_function] == "hann" else torch.hamming_window
        return make(self.win_samples, periodic=True, dtype=torch.float64)

    # -- STFT with the extractor's framing -----------------------------------------------------

    def _center(self, wave: Tensor) -> Tensor:
        """(..., n + 2 * pad): reflect padding by half a window at each end, numpy's ``reflect``
        even when the pad exceeds the signal (the reflections repeat with period 2 (n - 1)),
        which ``F.pad`` refuses; so short clips match the extractor too."""
        n, pad = wave.shape[-1], self.win_samples // 2
        index = torch.arange(-pad, n + pad, device=wave.device)
        period = 2 * (n - 1)
        index = index.remainder(period)
        index = torch.where(index < n, index, period - index)
        return wave.index_select(-1, index)

    def stft(self, wave: Tensor) -> Tensor:
        """(..., frames, n_freqs) complex spectrum of (..., samples) waveforms: centred reflect
        padding, windows of ``win_samples`` every ``hop_samples``, zero-padded at the end to
        ``n_fft``. Computed in ``wave``'s dtype (float64 for feature parity)."""
        if wave.shape[-1] < 2:
            raise DataError(f"{wave.shape[-1]} samples is too short for a spectrogram (at "
                            "least 2)")
        frames = self._center(wave).unfold(-1, self.win_samples, self.hop_samples)
        window = self.window.to(device=wave.device, dtype=wave.dtype)
        return torch.fft.rfft(frames * window, n=self.n_fft)

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """(..., length) waveforms whose :meth:`stft` is closest to ``spec`` (..., frames,
        n_freqs) in the least-squares sense (Griffin & Lim 1984): windowed inverse FFTs
        overlap-added and divided by the summed squared window, then the centre padding cut
        off. Samples no window covers (never, for a hop <= window) would be left at zero."""
        frames = spec.shape[-2]
        lead = spec.shape[:-2]
        window = self.window.to(device=spec.device, dtype=spec.real.dtype)
        chunks = torch.fft.irfft(spec, n=self.n_fft)[..., : self.win_samples] * window
        total = (frames - 1) * self.hop_samples + self.win_samples
        chunks = chunks.reshape(-1, frames, self.win_samples).transpose(1, 2)
        summed = F.fold(chunks, (1, total), (1, self.win_samples),
                        stride=(1, self.hop_samples)).reshape(*lead, total)
        envelope = F.fold((window ** 2).reshape(1, -1, 1).expand(1, -1, frames), (1, total),
                          (1, self.win_samples), stride=(1, self.hop_samples)).reshape(total)
        wave = summed / torch.where(envelope > 1e-10, envelope, torch.ones_like(envelope))
        pad = self.win_samples // 2
        wave = wave[..., pad: pad + length]
        if wave.shape[-1] < length:  # asked for more than the frames cover
            wave = F.pad(wave, (0, length - wave.shape[-1]))
        return wave

    # -- features ------------------------------------------------------------------------------

    def magnitude_to_log_mel(self, magnitude: Tensor) -> Tensor:
        """(..., frames, num_mel_bins) log10 mel of a (..., frames, n_freqs) magnitude."""
        mel = magnitude @ self.filters.to(device=magnitude.device, dtype=magnitude.dtype)
        return mel.clamp(min=self.mel_floor).log10()

    def __call__(self, samples: np.ndarray | Tensor, where: str = "audio") -> Tensor:
        """(frames, num_mel_bins) float32 log10-mel of one mono waveform at ``sampling_rate``.
        The input is rounded to float32 (as the extractor does) and the rest computed in
        float64, so the result matches the extractor's numpy path to float32 precision."""
        wave = samples if isinstance(samples, Tensor) else torch.from_numpy(np.asarray(samples))
        if wave.dim() != 1 and not (wave.dim() == 2 and 1 in wave.shape):
            raise DataError(f"{where}: expected one mono waveform, got shape "
                            f"{tuple(wave.shape)}")
        wave = wave.reshape(-1).to(torch.float32).to(torch.float64)
        if wave.numel() < 2:
            raise DataError(f"{where}: {wave.numel()} samples is too short for a spectrogram "
                            "(at least 2)")
        return self.magnitude_to_log_mel(self.stft(wave).abs()).to(torch.float32)

    # -- saving --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "features") -> TTSMel:
        """The settings :meth:`to_dict` wrote (unknown keys refused with a hint)."""
        from seqformer.config import from_dict

        data = dict(data or {})
        kind = data.pop("kind", KIND)
        if kind != KIND:
            raise ConfigError(f"{where}: features of kind {kind!r}, not {KIND!r} (a "
                              "text-to-speech model needs SpeechT5's target spectrogram)")
        return from_dict(cls, data, where, "features.")

    @classmethod
    def from_hf(cls, preprocessor: dict[str, Any], where: str = "preprocessor_config.json"
                ) -> TTSMel:
        """The settings of a ``SpeechT5FeatureExtractor``'s ``preprocessor_config.json``
        (its other keys, which concern waveform inputs, are ignored)."""
        return cls.from_dict({k: preprocessor[k] for k in HF_KEYS if k in preprocessor}, where)

    def to_hf(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` entries of these settings."""
        return dataclasses.asdict(self)
