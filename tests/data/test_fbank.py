"""Kaldi-style log-mel filterbank: parity with transformers.audio_utils (the reference
ASTFeatureExtractor uses without torchaudio), padding / cropping and the AST normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from seqformer.data.fbank import MEL_FLOOR, Fbank, mel_filters
from seqformer.errors import ConfigError

audio_utils = pytest.importorskip("transformers.audio_utils")


def reference_filters(bins: int, n_fft: int = 512, rate: int = 16000) -> np.ndarray:
    with warnings.catch_warnings():  # 128 bins over 257 FFT bins leaves some filters empty
        warnings.simplefilter("ignore")
        return audio_utils.mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=bins, min_frequency=20,
            max_frequency=rate // 2, sampling_rate=rate, norm=None, mel_scale="kaldi",
            triangularize_in_mel_space=True)


def reference_fbank(waveform: np.ndarray, bins: int) -> np.ndarray:
    """ASTFeatureExtractor._extract_fbank_features without torchaudio (its exact call)."""
    return audio_utils.spectrogram(
        waveform, audio_utils.window_function(400, "hann", periodic=False), frame_length=400,
        hop_length=160, fft_length=512, power=2.0, center=False, preemphasis=0.97,
        mel_filters=reference_filters(bins), log_mel="log", mel_floor=1.192092955078125e-07,
        remove_dc_offset=True).T


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """A chirp with an envelope, a DC offset and noise: exercises every stage."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = np.sin(2 * np.pi * (200 + 1500 * t) * t) * np.hanning(n)
    return (0.4 * tone + 0.02 + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("bins", [128, 64, 23])
def test_mel_filters_equal_the_reference(bins: int) -> None:
    ours = mel_filters(bins, 512, 16000, 20.0).numpy()
    np.testing.assert_allclose(ours, reference_filters(bins), atol=1e-12)


@pytest.mark.parametrize("bins,samples", [(128, 16000), (64, 7321), (40, 400)])
def test_log_mel_equals_transformers_spectrogram(bins: int, samples: int) -> None:
    wave = speechlike(samples)
    expected = reference_fbank(wave, bins)
    got = Fbank(num_mel_bins=bins).log_mel(wave).numpy()
    assert got.shape == expected.shape == (1 + (samples - 400) // 160, bins)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
    # Silence hits the floor rather than -inf.
    silent = Fbank(num_mel_bins=bins).log_mel(np.zeros(800, np.float32))
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(MEL_FLOOR))))


def test_batched_features_equal_one_by_one_and_match_the_extractor() -> None:
    transformers = pytest.importorskip("transformers")
    clips = [speechlike(n, seed) for seed, n in enumerate((16000, 12000, 16000, 3000))]
    fbank = Fbank(num_mel_bins=64, max_frames=90, mean=-4.2677393, std=4.5689974)
    batched = fbank(clips)
    single = torch.stack([fbank.normalise(fbank.pad_or_crop(fbank.log_mel(c))) for c in clips])
    assert batched.shape == (4, 90, 64) and torch.equal(batched, single)
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=64, max_length=90)
    expected = extractor(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    np.testing.assert_allclose(batched.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_pad_with_log_zeros_or_crop_the_tail() -> None:
    fbank = Fbank(num_mel_bins=8, max_frames=5)
    x = torch.arange(24.0).reshape(3, 8)
    padded = fbank.pad_or_crop(x)
    assert padded.shape == (5, 8) and torch.equal(padded[:3], x) and not padded[3:].any()
    long = torch.arange(80.0).reshape(10, 8)
    assert torch.equal(fbank.pad_or_crop(long), long[:5])


def test_fit_normalises_the_training_features_and_round_trips() -> None:
    fbank = Fbank(num_mel_bins=16, max_frames=20)
    raw = fbank.raw([speechlike(4000, s) for s in range(3)])
    fitted = fbank.fit(raw)
    normed = fitted.normalise(raw)
    assert float(normed.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(normed.std()) == pytest.approx(0.5, abs=1e-4)  # AST divides by 2 std
    assert Fbank.from_dict(fitted.to_dict()) == fitted
    with pytest.raises(ConfigError, match="features.std"):
        Fbank(std=0.0)
