"""The HiFi-GAN generator (``models/hifigan.py``): output lengths, batch independence, the
saved mean / scale standardisation, save / load as a ``hifigan`` directory, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.hifigan import HiFiGAN, HiFiGANConfig

TINY = HiFiGANConfig(num_mel_bins=10, upsample_initial_channel=16, upsample_rates=(2, 3),
                     upsample_kernel_sizes=(4, 5), resblock_kernel_sizes=(3, 5),
                     resblock_dilation_sizes=((1, 2), (1, 3)), sampling_rate=8000)


@pytest.fixture
def one_thread():
    """Tiny convolutions run far faster on one thread than on contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0) -> HiFiGAN:
    torch.manual_seed(seed)
    model = HiFiGAN(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.mean.copy_(torch.randn(10))
        model.scale.copy_(torch.rand(10) + 0.5)
    return model


def test_frames_become_hop_samples_and_batch_rows_are_independent(one_thread) -> None:
    model = tiny_model()
    assert TINY.hop_length == 6 and HiFiGAN(HiFiGANConfig()).config.hop_length == 256
    x = torch.randn(3, 7, 10)
    with torch.no_grad():
        out = model(x)
        single = model(x[1])
    assert out.shape == (3, 42) and single.shape == (42,) == (model.output_length(7),)
    assert torch.allclose(out[1], single, atol=1e-6)
    assert out.abs().max() < 1 and out.std() > 1e-3  # tanh, and not a constant
    with pytest.raises(ValueError, match="frames, 10"):
        model(torch.randn(7, 11))


def test_normalize_before_uses_the_saved_mean_and_scale(one_thread) -> None:
    model = tiny_model()
    x = torch.randn(5, 10)
    with torch.no_grad():
        before = model(x)
        plain = HiFiGAN(HiFiGANConfig(**{**TINY.__dict__, "normalize_before": False})).eval()
        plain.load_state_dict(model.state_dict())
        assert torch.allclose(plain((x - model.mean) / model.scale), before, atol=1e-6)
        model.mean.add_(1.0)
        assert not torch.allclose(model(x), before, atol=1e-3)


def test_save_and_load_a_hifigan_directory(tmp_path: Path, one_thread) -> None:
    model = tiny_model()
    features = {"kind": "speecht5-mel", "sampling_rate": 8000}
    model.save(tmp_path / "voc", features)
    config = json.loads((tmp_path / "voc" / "config.json").read_text())
    assert config["family"] == "hifigan" and config["features"] == features
    loaded = HiFiGAN.load(tmp_path / "voc")
    assert loaded.config == TINY
    x = torch.randn(2, 4, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"family": "whisper"}')
    with pytest.raises(CheckpointError, match="a whisper model, not a HiFi-GAN vocoder"):
        HiFiGAN.load(tmp_path / "other")


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="equally long"):
        HiFiGANConfig(upsample_rates=(4, 4), upsample_kernel_sizes=(8,))
    with pytest.raises(ConfigError, match="kernel - rate even"):
        HiFiGANConfig(upsample_kernel_sizes=(8, 8, 8, 7))
    with pytest.raises(ConfigError, match="divisible by 2\\^4"):
        HiFiGANConfig(upsample_initial_channel=40)
    with pytest.raises(ConfigError, match="odd"):
        HiFiGANConfig(resblock_kernel_sizes=(3, 4, 11))
