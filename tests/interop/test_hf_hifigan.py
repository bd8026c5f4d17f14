"""SpeechT5HifiGan <-> seqformer HiFiGAN (``interop/hf_hifigan.py``): a tiny random HF vocoder
(every weight perturbed, non-trivial mean / scale, a non-default leaky slope) gives our
waveform to 1e-5, single and batched; import writes a ``hifigan`` directory with SpeechT5's
mel settings; export is read by ``from_pretrained`` with the same output and settings; a
weight-normalised checkpoint is folded; other checkpoints are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import SpeechT5FeatureExtractor, SpeechT5HifiGan, SpeechT5HifiGanConfig

from seqformer.data.tts_mel import TTSMel
from seqformer.errors import CheckpointError
from seqformer.interop import hf_hifigan
from seqformer.models.hifigan import HiFiGAN

BINS = 12


def hf_model(seed: int = 0, rates: tuple[int, ...] = (4, 4, 4, 4),
             kernels: tuple[int, ...] = (8, 6, 4, 8), spread: float = 0.17) -> SpeechT5HifiGan:
    """Tiny, with SpeechT5's hop (4 x 4 x 4 x 4 = 256) but other kernels, 12 mel bins and a
    non-default leaky slope; every weight and bias moved by ``spread`` x N(0, 1) (for four
    stages, below ~0.15 the output fades to nothing, above ~0.2 tanh saturates)."""
    torch.manual_seed(seed)
    config = SpeechT5HifiGanConfig(
        model_in_dim=BINS, sampling_rate=16000, upsample_initial_channel=32,
        upsample_rates=list(rates), upsample_kernel_sizes=list(kernels),
        resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [1, 3]],
        leaky_relu_slope=0.2)
    model = SpeechT5HifiGan(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * spread)
        model.mean.copy_(torch.randn(BINS))
        model.scale.copy_(torch.rand(BINS) + 0.5)
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(9, BINS, generator=g), torch.randn(3, 9, BINS, generator=g)


def assert_same_output(ours: HiFiGAN, theirs: SpeechT5HifiGan) -> None:
    single, batch = inputs()
    hop = ours.config.hop_length
    with torch.no_grad():
        for x in (single, batch):
            a, b = ours(x), theirs(x)
            assert a.shape == b.shape == (*x.shape[:-2], 9 * hop)
            assert (a - b).abs().max() <= 1e-5
            assert 0.01 < b.std() and b.abs().max() < 0.99  # tanh not saturated: a real test


def test_import_matches_speecht5_hifigan(tmp_path: Path, one_thread) -> None:
    theirs = hf_model()
    theirs.save_pretrained(tmp_path / "hf")
    assert hf_hifigan.import_hifigan(tmp_path / "hf", tmp_path / "ours") == "hifigan"
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["family"] == "hifigan" and config["num_mel_bins"] == BINS
    # No preprocessor_config.json: SpeechT5's extractor defaults (the hop fits: 256).
    assert TTSMel.from_dict(config["features"]) == TTSMel(num_mel_bins=BINS)
    ours = HiFiGAN.load(tmp_path / "ours")
    assert ours.config.leaky_relu_slope == 0.2 and ours.config.hop_length == 256
    assert_same_output(ours, theirs)


def test_a_vocoder_with_another_hop_imports_without_mel_settings(tmp_path: Path,
                                                                 one_thread) -> None:
    # 6 samples per frame: not SpeechT5's 256
    theirs = hf_model(rates=(2, 3), kernels=(4, 7), spread=0.1)
    theirs.save_pretrained(tmp_path / "hf")
    hf_hifigan.import_hifigan(tmp_path / "hf", tmp_path / "ours")
    assert "features" not in json.loads((tmp_path / "ours" / "config.json").read_text())
    assert_same_output(HiFiGAN.load(tmp_path / "ours"), theirs)


def test_export_is_read_by_from_pretrained(tmp_path: Path, one_thread) -> None:
    theirs = hf_model(seed=2)
    theirs.save_pretrained(tmp_path / "hf")
    hf_hifigan.import_hifigan(tmp_path / "hf", tmp_path / "ours")
    assert hf_hifigan.export_hifigan(tmp_path / "ours", tmp_path / "back") == "speecht5_hifigan"
    back = SpeechT5HifiGan.from_pretrained(tmp_path / "back").eval()
    ours = HiFiGAN.load(tmp_path / "ours")
    assert_same_output(ours, back)
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert back.config.to_dict()["upsample_kernel_sizes"] == [8, 6, 4, 8]
    extractor = SpeechT5FeatureExtractor.from_pretrained(tmp_path / "back")
    assert TTSMel.from_hf(extractor.to_dict()) == TTSMel(num_mel_bins=BINS)


def test_a_weight_normalised_checkpoint_is_folded(tmp_path: Path, one_thread) -> None:
    theirs = hf_model(seed=3)
    theirs.apply_weight_norm()
    theirs.save_pretrained(tmp_path / "hf")
    assert any("parametrizations" in k for k in theirs.state_dict())
    assert_same_output(hf_hifigan.load(tmp_path / "hf"), theirs)


def test_other_checkpoints_are_refused(tmp_path: Path, one_thread) -> None:
    theirs = hf_model()
    theirs.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(CheckpointError, match="model_type='whisper', not speecht5_hifigan"):
        hf_hifigan.load(tmp_path / "whisper")
    config["upsample_initial_channel"] = 64  # the weights no longer fit
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        hf_hifigan.load(tmp_path / "hf")
    config["upsample_kernel_sizes"] = [8, 6, 4, 7]  # 7 - 4 is odd: a length we do not produce
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unsupported SpeechT5HifiGan config"):
        hf_hifigan.load(tmp_path / "hf")
