"""Vocoders: a log-mel spectrogram (``data/tts_mel.py``'s, what a text-to-speech model predicts)
back to a waveform.

**Griffin-Lim** (the default; no weights, works for any :class:`TTSMel`): the mel energies are
first mapped back to a linear magnitude spectrogram. The filterbank has far fewer rows than FFT
bins, so many magnitudes give the same mel energies; we take a non-negative least-squares one
(the pseudo-inverse solution clamped at zero, then projected, Nesterov-accelerated gradient
steps on ``||S F - M||^2`` subject to ``S >= 0``, as librosa's ``mel_to_stft`` does with
L-BFGS-B): negative magnitudes are meaningless, and clamping alone leaves the mel energies
off. Then fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013): alternate projections
between spectrograms with the wanted magnitude and spectrograms of a real signal, with a
momentum term (0.99) that converges much faster than plain Griffin-Lim (1984). Its STFT is
:meth:`TTSMel.stft` itself, so the waveform has exactly the frames it was made from. The phase
starts random (from ``generator``: same generator seed, same waveform).

**HiFi-GAN** (``models/hifigan.py``): a seqformer ``hifigan`` directory, or a Hugging Face
``SpeechT5HifiGan`` directory converted on the fly. Much better audio, but only for the mel
settings it was trained on (checked against the directory's ``features``).

:func:`load_vocoder` turns ``--vocoder`` into a callable; :func:`save_wav` writes the result.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from seqformer.data.tts_mel import TTSMel
from seqformer.errors import CheckpointError, DataError

GRIFFIN_LIM = "griffin-lim"


# -- mel -> linear magnitude ---------------------------------------------------------------------


def mel_to_magnitude(log_mel: Tensor, mel: TTSMel, n_iter: int = 64) -> Tensor:
    """(..., frames, n_freqs) non-negative magnitudes whose mel energies approximate
    ``10 ** log_mel`` (..., frames, num_mel_bins) in the least-squares sense (see the module
    docstring). Bins outside [fmin, fmax] belong to no filter and come out zero."""
    if log_mel.shape[-1] != mel.num_mel_bins:
        raise DataError(f"spectrogram has {log_mel.shape[-1]} mel bins; the features have "
                        f"{mel.num_mel_bins}")
    fb = mel.filters.to(device=log_mel.device)  # (n_freqs, n_mels), float64
    target = torch.pow(10.0, log_mel.to(torch.float64))
    target = torch.where(target <= mel.mel_floor * 1.0001, torch.zeros_like(target), target)
    covered = (fb.sum(1) > 0).to(fb.dtype)  # bins no filter sees: zero (pinv leaves ~1e-17)
    magnitude = (target @ torch.linalg.pinv(fb)).clamp(min=0.0) * covered
    gram = fb @ fb.T  # (n_freqs, n_freqs): the gradient is S (F F^T) - M F^T
    step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2) ** 2)
    pull = target @ fb.T
    previous, momentum_point, t = magnitude, magnitude, 1.0
    for _ in range(n_iter):  # FISTA on the non-negative orthant
        current = (momentum_point - step * (momentum_point @ gram - pull)).clamp(min=0.0)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum_point = current + ((t - 1.0) / t_next) * (current - previous)
        previous, t = current, t_next
    return previous.to(torch.float32)


# -- Griffin-Lim ---------------------------------------------------------------------------------


def griffin_lim_magnitude(magnitude: Tensor, mel: TTSMel, n_iter: int = 32,
                          momentum: float = 0.99, generator: torch.Generator | None = None,
                          length: int | None = None) -> Tensor:
    """(..., length) waveforms whose :meth:`TTSMel.stft` magnitude approximates ``magnitude``
    (..., frames, n_freqs), by fast Griffin-Lim. ``length`` defaults to
    :meth:`TTSMel.samples_for` (frames): the shortest waveform with exactly these frames.
    ``momentum`` 0 is the original algorithm; Perraudin et al. recommend 0.99."""
    if magnitude.shape[-1] != mel.n_freqs:
        raise DataError(f"magnitude has {magnitude.shape[-1]} frequency bins; the features "
                        f"have {mel.n_freqs}")
    if n_iter < 0 or not 0.0 <= momentum < 1.0:
        raise ValueError(f"need n_iter >= 0 and 0 <= momentum < 1, got {n_iter}, {momentum}")
    frames = magnitude.shape[-2]
    natural = mel.samples_for(frames)  # iterate at the length with exactly these frames
    magnitude = magnitude.to(torch.float32)
    phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float32)
    angles = torch.polar(torch.ones_like(phase), 2 * math.pi * phase).to(magnitude.device)
    rebuilt = torch.zeros_like(angles)
    for _ in range(n_iter):
        previous = rebuilt
        rebuilt = mel.stft(mel.istft(magnitude * angles, natural))
        angles = rebuilt - (momentum / (1.0 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
    return mel.istft(magnitude * angles, natural if length is None else length)


def griffin_lim(log_mel: Tensor, mel: TTSMel, n_iter: int = 32, momentum: float = 0.99,
                generator: torch.Generator | None = None, length: int | None = None) -> Tensor:
    """(samples,) float32 waveform of one (frames, num_mel_bins) log10-mel spectrogram, or
    (batch, samples) of a (batch, frames, num_mel_bins) batch of equally long ones; see
    :func:`mel_to_magnitude` and :func:`griffin_lim_magnitude`. Peaks are not normalised:
    the level is the one the spectrogram describes."""
    if log_mel.dim() not in (2, 3):
        raise DataError(f"expected a (frames, {mel.num_mel_bins}) spectrogram or a batch of "
                        f"them, got shape {tuple(log_mel.shape)}")
    if log_mel.shape[-2] < 1:
        raise DataError("an empty spectrogram (0 frames) has no waveform")
    magnitude = mel_to_magnitude(log_mel.detach(), mel)
    return griffin_lim_magnitude(magnitude, mel, n_iter, momentum, generator, length)


def spectral_convergence(magnitude: Tensor, wave: Tensor, mel: TTSMel) -> float:
    """``||S - |STFT(x)||| / ||S||`` (Frobenius): how far one waveform's magnitude is from the
    target ``S`` (frames, n_freqs); 0 is a perfect match."""
    got = mel.stft(wave.to(torch.float64)).abs()[: magnitude.shape[0]]
    target = magnitude.to(torch.float64)
    return float(torch.linalg.norm(target - got) / torch.linalg.norm(target))


# -- vocoders behind one callable ----------------------------------------------------------------


@runtime_checkable
class Vocoder(Protocol):
    """(frames, num_mel_bins) log10-mel -> (samples,) float32 waveform on the CPU at
    ``sample_rate``."""

    sample_rate: int

    def __call__(self, log_mel: Tensor) -> Tensor: ...


@dataclass
class GriffinLimVocoder:
    """:func:`griffin_lim` with fixed settings; each call draws its phases from a generator
    seeded with ``seed``, so the same spectrogram always gives the same waveform."""

    mel: TTSMel
    n_iter: int = 32
    momentum: float = 0.99
    seed: int = 0
    sample_rate: int = field(init=False)

    def __post_init__(self) -> None:
        self.sample_rate = self.mel.sampling_rate

    def __call__(self, log_mel: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return griffin_lim(log_mel.float().cpu(), self.mel, self.n_iter, self.momentum,
                           generator)


class HiFiGANVocoder:
    """A HiFi-GAN generator run without gradients; input moved to its device, output back."""

    def __init__(self, model: torch.nn.Module, sample_rate: int, device: str) -> None:
        self.model = model.to(device).eval()
        self.sample_rate = sample_rate
        self.device = device

    @torch.no_grad()
    def __call__(self, log_mel: Tensor) -> Tensor:
        return self.model(log_mel.float().to(self.device)).float().cpu()


def load_vocoder(spec: str, mel: TTSMel, device: str = "cpu", n_iter: int = 32,
                 momentum: float = 0.99, seed: int = 0) -> Vocoder:
    """The vocoder ``spec`` names: ``griffin-lim`` (with ``n_iter`` / ``momentum`` / ``seed``,
    on the CPU), a seqformer HiFi-GAN directory (config.json family ``hifigan``) or a Hugging
    Face ``SpeechT5HifiGan`` ``save_pretrained`` directory (converted in memory), run on
    ``device``. A HiFi-GAN must fit ``mel``: its mel bins, its upsampling (= the hop), its
    sampling rate and, when the directory records them, the exact mel settings."""
    if spec == GRIFFIN_LIM:
        return GriffinLimVocoder(mel, n_iter, momentum, seed)
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointError(f"--vocoder {spec}: neither '{GRIFFIN_LIM}' nor a directory; pass "
                              f"'{GRIFFIN_LIM}' or a HiFi-GAN directory (seqformer or "
                              "SpeechT5HifiGan)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: missing or unreadable ({exc}); "
                              "--vocoder needs a HiFi-GAN model directory") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / 'config.json'}: expected a JSON object")
    if config.get("family") == "hifigan":
        from seqformer.models.hifigan import HiFiGAN

        model = HiFiGAN.load(path)
        features = config.get("features")
    elif config.get("model_type") == "speecht5_hifigan":
        from seqformer.interop.hf_hifigan import features_from_hf, load

        model = load(path)
        known = features_from_hf(path, model.config)
        features = known.to_dict() if known is not None else None
    else:
        found = config.get("family") or config.get("model_type") or "unknown"
        raise CheckpointError(f"--vocoder {path}: a {found!r} model, not a HiFi-GAN vocoder; "
                              f"pass '{GRIFFIN_LIM}' or a hifigan / speecht5_hifigan directory")
    check_fits(model.config, features, mel, str(path))
    return HiFiGANVocoder(model, model.config.sampling_rate, device)


def check_fits(config, features: dict | None, mel: TTSMel, where: str) -> None:
    """A CheckpointError unless a HiFi-GAN of ``config`` (trained on ``features``, if known)
    can voice spectrograms made with ``mel``."""
    if config.num_mel_bins != mel.num_mel_bins:
        raise CheckpointError(f"--vocoder {where}: takes {config.num_mel_bins} mel bins, the "
                              f"model predicts {mel.num_mel_bins}; use a matching vocoder or "
                              f"'{GRIFFIN_LIM}'")
    if config.hop_length != mel.hop_samples or config.sampling_rate != mel.sampling_rate:
        raise CheckpointError(f"--vocoder {where}: makes {config.hop_length} samples per frame "
                              f"at {config.sampling_rate} Hz, the spectrogram has "
                              f"{mel.hop_samples} at {mel.sampling_rate} Hz; use a matching "
                              f"vocoder or '{GRIFFIN_LIM}'")
    if features is not None:
        trained = TTSMel.from_dict(features, f"{where}/config.json")
        if trained != mel:
            diff = [k for k, v in trained.to_dict().items() if mel.to_dict()[k] != v]
            raise CheckpointError(f"--vocoder {where}: trained on other mel settings "
                                  f"({', '.join(diff)} differ); use a matching vocoder or "
                                  f"'{GRIFFIN_LIM}'")


# -- WAV files -----------------------------------------------------------------------------------


def save_wav(path: str | Path, samples: Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono float samples as 16-bit PCM, clipped to [-1, 1] (NaN as silence), atomically
    (a temporary file renamed into place: a reader never sees half a file)."""
    from seqformer.data.speech import write_wav
    from seqformer.training.checkpoint import atomic_write

    data = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
    data = np.squeeze(data.astype(np.float64))
    if data.ndim != 1:
        raise DataError(f"{path}: expected mono samples, got shape {data.shape}")
    data = np.clip(np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    atomic_write(path, lambda tmp: write_wav(tmp, data, sample_rate))


def read_wav(path: str | Path) -> np.ndarray:
    """float32 mono samples at 16 kHz (``data/speech.py``'s reader; resamples other rates)."""
    from seqformer.data.speech import read_wav as read

    return read(path)
