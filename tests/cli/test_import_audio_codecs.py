"""``seqformer import`` / ``export`` for the audio generators' HF models: the SpeechT5 HiFi-GAN
vocoder and EnCodec go in and out through the CLI and still compute what transformers does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.cli import main

transformers = pytest.importorskip("transformers")


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_hifigan_import_export_through_the_cli(tmp_path: Path) -> None:
    config = transformers.SpeechT5HifiGanConfig(
        model_in_dim=16, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])
    hf = perturbed(transformers.SpeechT5HifiGan(config))
    hf.save_pretrained(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["family"] == "hifigan"
    assert main(["export", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    back = transformers.SpeechT5HifiGan.from_pretrained(tmp_path / "back").eval()
    mel = torch.randn(12, 16)
    with torch.no_grad():
        assert torch.allclose(back(mel), hf(mel), atol=1e-5)


def test_encodec_import_export_through_the_cli(tmp_path: Path) -> None:
    config = transformers.EncodecConfig(
        num_filters=4, upsampling_ratios=[2, 3], codebook_size=16, codebook_dim=8,
        hidden_size=8, num_lstm_layers=1, target_bandwidths=[0.8, 3.2], sampling_rate=2400)
    hf = perturbed(transformers.EncodecModel(config))
    hf.save_pretrained(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["family"] == "encodec"
    assert main(["export", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    back = transformers.EncodecModel.from_pretrained(tmp_path / "back").eval()
    wave = torch.randn(1, 1, 600)
    with torch.no_grad():
        a = hf.encode(wave, bandwidth=3.2).audio_codes
        b = back.encode(wave, bandwidth=3.2).audio_codes
    assert torch.equal(a, b)
