"""Vocoders (``decoding/vocoder.py``): Griffin-Lim on a synthetic harmonic signal and on
espeak-ng speech (spectral convergence, the mel round trip, lengths, determinism, batches),
the non-negative mel inversion, WAV writing, and ``load_vocoder``'s kinds and refusals.

Thresholds, from measurements (32 iterations, momentum 0.99, 16 kHz SpeechT5 settings):
spectral convergence ||S - |STFT(x)||| / ||S|| given the true magnitude is 0.067 on the
harmonic signal and 0.059-0.064 on speech over three seeds (0.62 with no iterations: random
phase), so < 0.10 leaves margin and still fails for a broken projection. From the mel
spectrogram, the waveform's mel energies are within 0.063-0.084 (relative Frobenius error)
of the target, and its log10-mel within 0.046-0.063 on average on the bins within 60 dB of
the loudest (quieter bins hold leakage, where log errors mean nothing), so < 0.12 and < 0.10."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SpeechT5HifiGan

from seqformer.data import speech
from seqformer.data.tts_mel import TTSMel
from seqformer.decoding import vocoder
from seqformer.errors import CheckpointError, DataError

MEL = TTSMel()


def harmonic(seconds: float = 1.0) -> torch.Tensor:
    """A voiced-like float64 signal: 19 harmonics of a 140 +- 30 Hz vibrato, faded in/out."""
    n = int(16000 * seconds)
    f0 = 140 + 30 * np.sin(2 * np.pi * 2 * np.arange(n) / 16000)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * 0.2 * np.hanning(n) ** 0.3
    return torch.from_numpy(x)


@pytest.fixture(scope="module")
def spoken() -> torch.Tensor:
    return torch.from_numpy(speech.synthesize("the quick brown fox", "en-us+m3")).double()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mel_errors(target: torch.Tensor, wave: torch.Tensor) -> tuple[float, float]:
    """(relative error of the linear mel energies, mean |log10 error| on the bins within 60 dB
    of the loudest) of ``wave``'s spectrogram against ``target``."""
    got = MEL(wave).double()
    target = target.double()
    lin, lin_got = 10 ** target, 10 ** got
    relative = float(torch.linalg.norm(lin - lin_got) / torch.linalg.norm(lin))
    loud = target > target.max() - 3
    return relative, float((got - target).abs()[loud].mean())


@pytest.mark.parametrize("source", ["harmonic", "speech"])
def test_griffin_lim_converges_on_the_true_magnitude(source: str, spoken) -> None:
    x = harmonic() if source == "harmonic" else spoken
    magnitude = MEL.stft(x).abs()
    convergence = [vocoder.spectral_convergence(magnitude, vocoder.griffin_lim_magnitude(
        magnitude, MEL, n_iter=n, generator=seeded()), MEL) for n in (0, 8, 16, 32)]
    assert convergence[0] > 0.4  # random phase: far off
    assert convergence == sorted(convergence, reverse=True)
    assert convergence[-1] < 0.10
    plain = vocoder.griffin_lim_magnitude(magnitude, MEL, 32, momentum=0.0, generator=seeded())
    assert vocoder.spectral_convergence(magnitude, plain, MEL) > convergence[-1]  # momentum helps


def test_griffin_lim_from_the_mel_spectrogram_round_trips(spoken) -> None:
    for x in (harmonic(), spoken):
        log_mel = MEL(x)
        wave = vocoder.griffin_lim(log_mel, MEL, generator=seeded())
        frames = log_mel.shape[0]
        assert wave.dtype == torch.float32 and wave.dim() == 1
        assert MEL.frames_for(len(wave)) == frames  # exactly the frames it was made from
        assert abs(len(wave) - frames * MEL.hop_samples) <= MEL.hop_samples
        relative, loud = mel_errors(log_mel, wave)
        assert relative < 0.12 and loud < 0.10


def test_the_mel_inversion_is_non_negative_and_fits_the_mel_energies(spoken) -> None:
    log_mel = MEL(spoken).double()
    magnitude = vocoder.mel_to_magnitude(log_mel, MEL)
    assert magnitude.shape == (log_mel.shape[0], MEL.n_freqs) and magnitude.min() >= 0
    assert (MEL.magnitude_to_log_mel(magnitude.double()) - log_mel).abs().mean() < 0.01

    def relative(m: torch.Tensor) -> float:  # of the linear mel energies
        target = 10 ** log_mel
        return float(torch.linalg.norm(m.double() @ MEL.filters - target)
                     / torch.linalg.norm(target))

    clamped = (10 ** log_mel @ torch.linalg.pinv(MEL.filters)).clamp(min=0)
    assert relative(magnitude) < 1e-3 < 0.02 < relative(clamped)  # measured 2e-7 and 0.04
    outside = MEL.filters.sum(1) == 0  # bins below fmin / above fmax: no filter, no energy
    assert outside.any() and magnitude[:, outside].abs().max() == 0


def test_griffin_lim_is_deterministic_batched_and_takes_a_length() -> None:
    log_mel = MEL(harmonic(0.5))
    a = vocoder.griffin_lim(log_mel, MEL, n_iter=4, generator=seeded(1))
    b = vocoder.griffin_lim(log_mel, MEL, n_iter=4, generator=seeded(1))
    c = vocoder.griffin_lim(log_mel, MEL, n_iter=4, generator=seeded(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    batch = vocoder.griffin_lim(torch.stack([log_mel, log_mel - 1]), MEL, generator=seeded())
    assert batch.shape == (2, len(a))
    assert mel_errors(log_mel, batch[0])[0] < 0.12 and mel_errors(log_mel - 1, batch[1])[0] < 0.12
    frames = log_mel.shape[0]
    longer = vocoder.griffin_lim(log_mel, MEL, n_iter=2, length=frames * MEL.hop_samples)
    assert len(longer) == frames * MEL.hop_samples
    with pytest.raises(DataError, match="81 mel bins"):
        vocoder.griffin_lim(torch.zeros(5, 81), MEL)


def test_save_wav_is_16_bit_clipped_and_atomic(tmp_path: Path) -> None:
    x = 0.5 * np.sin(np.arange(4000) * 0.05)
    x[10], x[11], x[12] = 1.7, -3.0, np.nan
    path = tmp_path / "out.wav"
    vocoder.save_wav(path, torch.from_numpy(x), 16000)
    back = vocoder.read_wav(path)
    assert len(back) == 4000 and back[10] == pytest.approx(1.0, abs=1e-4)
    assert back[11] == pytest.approx(-1.0, abs=1e-4) and back[12] == 0.0
    keep = np.ones(4000, bool)
    keep[10:13] = False
    assert np.abs(back[keep] - x[keep]).max() < 1 / 32767
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary left behind
    with pytest.raises(DataError, match="mono"):
        vocoder.save_wav(tmp_path / "stereo.wav", np.zeros((2, 100)), 16000)


def test_load_vocoder_griffin_lim_and_refusals(tmp_path: Path) -> None:
    voc = vocoder.load_vocoder("griffin-lim", MEL)
    assert isinstance(voc, vocoder.Vocoder) and voc.sample_rate == 16000
    log_mel = MEL(harmonic(0.3))
    assert torch.equal(voc(log_mel), voc(log_mel))  # seeded per call
    fewer = vocoder.load_vocoder("griffin-lim", MEL, n_iter=1, seed=3)
    assert torch.equal(fewer(log_mel), vocoder.griffin_lim(log_mel, MEL, 1, generator=seeded(3)))
    with pytest.raises(CheckpointError, match="neither 'griffin-lim' nor a directory"):
        vocoder.load_vocoder("griffinlim", MEL)
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "config.json").write_text(json.dumps({"family": "whisper"}))
    with pytest.raises(CheckpointError, match="'whisper' model, not a HiFi-GAN"):
        vocoder.load_vocoder(str(tmp_path / "whisper"), MEL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json: missing or unreadable"):
        vocoder.load_vocoder(str(tmp_path / "empty"), MEL)


def tiny_hifigan(bins: int = 80):
    from seqformer.models.hifigan import HiFiGAN, HiFiGANConfig

    torch.manual_seed(0)
    return HiFiGAN(HiFiGANConfig(num_mel_bins=bins, upsample_initial_channel=16,
                                 upsample_kernel_sizes=(4, 4, 4, 4),
                                 resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),)))


def test_load_vocoder_hifigan_directories(tmp_path: Path) -> None:
    from seqformer.interop.hf_hifigan import export_hifigan

    model = tiny_hifigan()
    model.save(tmp_path / "ours", MEL.to_dict())
    export_hifigan(tmp_path / "ours", tmp_path / "hf")
    log_mel = MEL(harmonic(0.2))
    with torch.no_grad():
        expected = SpeechT5HifiGan.from_pretrained(tmp_path / "hf").eval()(log_mel)
    for directory in ("ours", "hf"):
        voc = vocoder.load_vocoder(str(tmp_path / directory), MEL)
        wave = voc(log_mel)
        assert voc.sample_rate == 16000 and wave.shape == (log_mel.shape[0] * 256,)
        assert torch.allclose(wave, expected, atol=1e-6)
    with pytest.raises(CheckpointError, match="other mel settings .*fmax"):
        vocoder.load_vocoder(str(tmp_path / "ours"), TTSMel(fmax=8000.0))
    with pytest.raises(CheckpointError, match="256 samples per frame at 16000 Hz"):
        vocoder.load_vocoder(str(tmp_path / "hf"), TTSMel(hop_length=10))
    tiny_hifigan(bins=40).save(tmp_path / "forty")
    with pytest.raises(CheckpointError, match="takes 40 mel bins, the model predicts 80"):
        vocoder.load_vocoder(str(tmp_path / "forty"), MEL)
