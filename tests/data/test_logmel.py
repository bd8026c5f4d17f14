"""Whisper's log-mel features against transformers' WhisperFeatureExtractor (numpy path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqformer.data.logmel import LogMel, mel_filters, pad_features
from seqformer.errors import DataError


def speechlike(samples: int, seed: int) -> np.ndarray:
    """A chirp with harmonics, an amplitude envelope and noise: a wide dynamic range, so the
    max - 8 clamp and every mel band are exercised."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    f0 = 120 + 80 * t / max(t[-1], 1e-9)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    wave *= np.exp(-((t - t.mean()) ** 2) / 0.02)
    wave += 1e-3 * rng.standard_normal(samples)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.mark.parametrize("samples,n_mels", [(16000, 80), (7777, 80), (4321, 128)])
def test_features_match_the_whisper_feature_extractor(samples: int, n_mels: int) -> None:
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    wave = speechlike(samples, samples)
    expected = extractor._np_extract_fbank_features(wave[None], "cpu")[0]
    got = LogMel(n_mels=n_mels)(wave)
    assert got.shape == expected.shape == (n_mels, samples // 160)
    assert float(np.abs(got.numpy() - expected).max()) < 1e-5


def test_filter_bank_matches_transformers() -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    expected = audio_utils.mel_filter_bank(
        num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
        sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(80, 400, 16000).numpy(), expected, rtol=1e-7,
                               atol=1e-10)


def test_batch_pads_with_zeros_after_each_utterance() -> None:
    mel = LogMel(n_mels=16)
    waves = [speechlike(3200, 1), speechlike(1600, 2)]
    features, lengths = mel.batch(waves)
    assert features.shape == (2, 16, 20) and lengths.tolist() == [20, 10]
    torch.testing.assert_close(features[1, :, :10], mel(waves[1]))
    assert float(features[1, :, 10:].abs().max()) == 0.0
    assert pad_features([mel(waves[0])])[0].shape == (1, 16, 20)


def test_too_short_audio_is_a_data_error() -> None:
    with pytest.raises(DataError, match="clip.wav: 100 samples is too short"):
        LogMel()(np.zeros(100, dtype=np.float32), "clip.wav")


def test_settings_round_trip() -> None:
    mel = LogMel(n_mels=40, hop_length=80)
    assert LogMel.from_dict(mel.to_dict()) == mel
