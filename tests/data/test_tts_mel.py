"""SpeechT5's target spectrogram (``data/tts_mel.py``): parity with SpeechT5FeatureExtractor
(default and non-default settings, clips shorter than the padding), frame counts, the
explicit STFT / inverse pair Griffin-Lim relies on, settings saved and read back, one-line
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SpeechT5FeatureExtractor

from seqformer.data.tts_mel import TTSMel
from seqformer.errors import ConfigError, DataError

# float32 rounding of the log10 values (about 1e-7) is what we measure; 1e-4 is the contract.
TOLERANCE = 1e-4


def wave(n: int, seed: int = 0) -> np.ndarray:
    """A voiced-like float32 clip: a 220 Hz tone with harmonics plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = sum(0.3 / k * np.sin(2 * np.pi * 220 * k * t + k) for k in range(1, 6))
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


def reference(extractor: SpeechT5FeatureExtractor, x: np.ndarray) -> np.ndarray:
    return extractor(audio_target=x, sampling_rate=extractor.sampling_rate)["input_values"][0]


@pytest.mark.parametrize("n", [16000, 4321, 1023, 300, 2])
def test_default_settings_match_the_feature_extractor(n: int) -> None:
    # 300 and 2 samples: the 512-sample reflect padding exceeds the clip (numpy repeats it).
    x = wave(n, seed=n)
    ref = reference(SpeechT5FeatureExtractor(), x)
    ours = TTSMel()(x)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape == (1 + n // 256, 80)
    assert np.abs(ours.numpy() - ref).max() <= TOLERANCE
    assert torch.equal(TTSMel()(torch.from_numpy(x)), ours)  # a tensor gives the same


def test_other_settings_match_too_window_shorter_than_the_fft() -> None:
    # 25 ms = 400 samples in a 512-point FFT (zero-padded at the end, not centred as torch.stft
    # would), a Hamming window, a 10 ms hop and another band.
    settings = dict(win_length=25, hop_length=10, num_mel_bins=40, fmin=0.0, fmax=8000.0,
                    win_function="hamming_window", mel_floor=1e-5)
    mel = TTSMel(**settings)
    assert (mel.win_samples, mel.n_fft, mel.hop_samples) == (400, 512, 160)
    x = wave(7777, seed=3)
    ref = reference(SpeechT5FeatureExtractor(**settings), x)
    assert ref.shape == mel(x).shape == (mel.frames_for(7777), 40)
    assert np.abs(mel(x).numpy() - ref).max() <= TOLERANCE


def test_filterbank_is_the_extractors_and_frames_count_as_it_does() -> None:
    mel = TTSMel()
    extractor = SpeechT5FeatureExtractor()
    assert mel.filters.shape == (513, 80) and mel.filters.dtype == torch.float64
    np.testing.assert_allclose(mel.filters.numpy(), extractor.mel_filters, atol=1e-12)
    for n in (2, 255, 256, 257, 1000, 16000):
        assert mel.frames_for(n) == 1 + n // 256
    for frames in (1, 2, 5, 63):  # samples_for: the shortest waveform with that many frames
        n = mel.samples_for(frames)
        assert mel.frames_for(n) == frames and (n == 2 or mel.frames_for(n - 1) == frames - 1)


def test_istft_inverts_stft_exactly() -> None:
    for mel in (TTSMel(), TTSMel(win_length=25, hop_length=10)):
        x = torch.from_numpy(wave(5000, seed=1)).double()
        spec = mel.stft(x)
        assert spec.shape == (mel.frames_for(5000), mel.n_freqs)
        assert (mel.istft(spec, 5000) - x).abs().max() < 1e-10
        batch = torch.stack([x, -x])
        assert torch.allclose(mel.istft(mel.stft(batch), 5000), batch, atol=1e-10)


def test_settings_round_trip_and_read_a_preprocessor_config() -> None:
    mel = TTSMel(num_mel_bins=64, fmax=7000.0)
    data = mel.to_dict()
    assert data["kind"] == "speecht5-mel" and TTSMel.from_dict(data) == mel
    hf = SpeechT5FeatureExtractor(num_mel_bins=64, fmax=7000.0).to_dict()
    assert TTSMel.from_hf(hf) == mel
    assert TTSMel.from_hf(SpeechT5FeatureExtractor(**mel.to_hf()).to_dict()) == mel


def test_bad_settings_and_inputs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="features.num_mel_bin.*did you mean"):
        TTSMel.from_dict({"num_mel_bin": 80})
    with pytest.raises(ConfigError, match="not 'speecht5-mel'"):
        TTSMel.from_dict({"kind": "whisper-logmel"})
    with pytest.raises(ConfigError, match="fmax"):
        TTSMel(fmax=9000.0)
    with pytest.raises(ConfigError, match="win_function"):
        TTSMel(win_function="kaiser")
    with pytest.raises(ConfigError, match="hop_length"):
        TTSMel(hop_length=80)
    with pytest.raises(DataError, match="clip.wav: 1 samples is too short"):
        TTSMel()(np.zeros(1, np.float32), where="clip.wav")
    with pytest.raises(DataError, match="one mono waveform"):
        TTSMel()(np.zeros((2, 100), np.float32))
