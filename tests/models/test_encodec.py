"""EnCodec model: shapes and the encode / decode API, causality, normalisation, training on
synthetic tones, save / load, and one-line errors for bad configs and checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seqformer.config import from_dict
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.encodec import Encodec, EncodecConfig, linear_overlap_add, load_encodec

# 2 kHz, hop 8 (250 frames/s), 32-entry codebooks: 1.25 kbps per codebook, up to 2 of them.
TINY = dict(sampling_rate=2000, upsampling_ratios=(2, 4), num_filters=4, hidden_size=8,
            codebook_size=32, target_bandwidths=(1.25, 2.5), mel_scales=(5, 6, 7), n_mels=16,
            kmeans_iters=10, num_lstm_layers=1)


def tiny(**overrides) -> Encodec:
    torch.manual_seed(0)
    return Encodec(EncodecConfig(**{**TINY, "kmeans_init": False, **overrides})).eval()


def tones(batch: int = 4, samples: int = 256) -> torch.Tensor:
    """(batch, 1, samples): sines and linear chirps at 2 kHz, amplitude 0.5."""
    t = torch.arange(samples) / 2000
    waves = []
    for i in range(batch):
        f0 = 100 + 60 * i
        phase = f0 * t if i % 2 else f0 * t + 300 * t * t
        waves.append(0.5 * torch.sin(2 * math.pi * phase))
    return torch.stack(waves)[:, None]


def test_encode_decode_shapes_and_bandwidths() -> None:
    model = tiny()
    assert model.config.num_quantizers == 2 and model.config.hop_length == 8
    x = torch.randn(3, 1, 100)
    with torch.no_grad():
        low, high = model.encode(x), model.encode(x, 2.5)
        assert low.codes.shape == (3, 1, 13) and high.codes.shape == (3, 2, 13)  # ceil(100/8)
        assert low.scale is None and low.codes.dtype == torch.long
        assert torch.equal(high.codes[:, :1], low.codes)  # the first codebook is shared
        assert model.decode(high.codes).shape == (3, 1, 104)
        assert model.decode(high.codes, length=100).shape == (3, 1, 100)
        # eval forward = encode then decode, cut to the input
        out = model(x, 2.5)
        assert torch.equal(out.codes, high.codes)
        assert torch.allclose(out.audio, model.decode(high.codes, length=100), atol=1e-6)
    with pytest.raises(ConfigError, match="1.25, 2.5 kbps"):
        model.encode(x, 3.0)
    with pytest.raises(ValueError, match="samples"):
        model.encode(torch.randn(3, 100))
    with pytest.raises(ValueError, match="n_q <= 2"):
        model.decode(torch.zeros(3, 3, 13, dtype=torch.long))


def test_causal_encoder_ignores_the_future() -> None:
    """With causal convs (and a unidirectional LSTM) latent frame t reads samples before
    (t + 1) x hop only: what a streaming codec needs. Symmetric padding looks ahead."""
    x = torch.randn(1, 1, 160)
    changed = x.clone()
    changed[..., 80:] = torch.randn(80)  # frames 0..9 end before sample 80
    for causal, same in ((True, True), (False, False)):
        model = tiny(use_causal_conv=causal)
        with torch.no_grad():
            a, b = model.embed(x)[..., :10], model.embed(changed)[..., :10]
        assert torch.equal(a, b) is same


def test_normalize_returns_the_scale_and_undoes_it() -> None:
    model = tiny(normalize=True)
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        enc = model.encode(x)
        louder = model.encode(10 * x)
        assert torch.equal(enc.codes, louder.codes)  # the codes do not see the level
        assert torch.allclose(louder.scale, 10 * enc.scale, rtol=1e-5)
        expected = x.pow(2).mean(dim=(1, 2)).sqrt().view(-1, 1) + 1e-8
        assert torch.allclose(enc.scale, expected)
        assert torch.allclose(model.decode(louder.codes, louder.scale),
                              10 * model.decode(enc.codes, enc.scale), rtol=1e-4, atol=1e-5)


def test_chunked_codes_are_one_sequence() -> None:
    """Chunks of 64 samples every 48: a signal of at most one stride is one chunk and codes
    as the unchunked model does (HF starts a chunk every stride, even inside the first); a
    longer one gives every chunk's codes in turn and one scale per chunk."""
    plain = tiny(normalize=True)
    chunked = tiny(normalize=True, chunk_length_s=0.032, overlap=0.25)
    chunked.load_state_dict(plain.state_dict())
    assert (chunked.config.chunk_length, chunked.config.chunk_stride,
            chunked.config.chunk_frames) == (64, 48, 8)
    with torch.no_grad():
        short = torch.randn(2, 1, 48)
        a, b = plain.encode(short, 2.5), chunked.encode(short, 2.5)
        assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)
        long = torch.randn(2, 1, 130)  # chunks at 0, 48, 96: 64, 64 and 34 samples
        enc = chunked.encode(long, 2.5)
        assert enc.codes.shape == (2, 2, 8 + 8 + 5) and enc.scale.shape == (2, 3)
        second = plain.encode(long[..., 48:112], 2.5)
        assert torch.equal(enc.codes[..., 8:16], second.codes)
        assert torch.equal(enc.scale[:, 1:2], second.scale)
        assert chunked.decode(enc.codes, enc.scale).shape == (2, 1, 48 + 48 + 40)
        with pytest.raises(ValueError, match="scale"):
            chunked.decode(enc.codes, enc.scale[:, :2])


def test_linear_overlap_add_cross_fades() -> None:
    one = torch.randn(2, 1, 10)
    assert torch.allclose(linear_overlap_add([one], 8), one)
    flat = linear_overlap_add([torch.ones(1, 10), torch.ones(1, 10), torch.ones(1, 4)], 8)
    assert flat.shape == (1, 20) and torch.allclose(flat, torch.ones(1, 20))
    ramp = linear_overlap_add([torch.zeros(1, 10), torch.ones(1, 10)], 6)[0, 6:10]
    assert (ramp.diff() > 0).all() and 0 < ramp[0] and ramp[-1] < 1  # a fade, not a jump


def test_training_lowers_reconstruction_loss() -> None:
    """100 Adam steps on four tones: the reconstruction (time L1 and mel loss, at the higher
    bandwidth) improves clearly over the model after its first step (codebooks k-means
    initialised, decoder untrained)."""
    torch.manual_seed(0)
    model = Encodec(EncodecConfig(**TINY, use_causal_conv=False, time_weight=1.0)).train()
    x = tones(samples=192)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=True)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(x, 2.5)
        model.train()
        return out.time_loss.item(), out.mel_loss.item()

    for step in range(100):
        out = model(x)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        if step == 0:
            first = evaluate()
            assert all(bool(layer.inited) for layer in model.quantizer.layers)
    last = evaluate()
    assert last[0] < 0.7 * first[0], (first, last)
    assert last[1] < 0.5 * first[1], (first, last)
    assert torch.isfinite(out.commitment_loss) and out.commitment_loss > 0


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = tiny(use_causal_conv=False, norm_type="time_group_norm")
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.embed.normal_()
    model.save(tmp_path / "codec")
    saved = json.loads((tmp_path / "codec" / "config.json").read_text())
    assert saved["family"] == "encodec" and saved["norm_type"] == "time_group_norm"
    loaded = load_encodec(tmp_path / "codec")
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 1, 90)
    with torch.no_grad():
        enc = model.encode(x, 2.5)
        assert torch.equal(loaded.encode(x, 2.5).codes, enc.codes)
        assert torch.equal(loaded.decode(enc.codes), model.decode(enc.codes))


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    model = tiny()
    model.save(tmp_path / "codec")
    config = json.loads((tmp_path / "codec" / "config.json").read_text())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({**config, "family": "vit"}))
    with pytest.raises(CheckpointError, match="not an EnCodec"):
        load_encodec(tmp_path / "other")
    (tmp_path / "codec" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError) as err:
        load_encodec(tmp_path / "codec")
    assert "\n" not in str(err.value)
    bigger = tmp_path / "bigger"
    tiny(num_filters=8).save(bigger)
    (bigger / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_encodec(bigger)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"codebook_size": 48}, "power of 2"),
    ({"chunk_length_s": 1.0}, "model.overlap in"),
    ({"chunk_length_s": 1e-4, "overlap": 0.0}, "less than one sample"),
    ({"norm_type": "batch_norm"}, "weight_norm, time_group_norm"),
    ({"target_bandwidths": (2.5, 1.25)}, "increasing"),
    ({"target_bandwidths": (0.5,)}, "less than one codebook"),
    ({"codebook_dim": 4}, "must equal model.hidden_size"),
    ({"upsampling_ratios": ()}, "positive integers"),
    ({"trim_right_ratio": 0.5}, "use_causal_conv"),
    ({"ema_decay": 1.0}, "ema_decay"),
])
def test_bad_configs_are_one_line_errors(overrides: dict, message: str) -> None:
    data = {**TINY, "use_causal_conv": False, **overrides}
    with pytest.raises(ConfigError, match=message) as err:
        from_dict(EncodecConfig, data, "model.yaml")
    assert "\n" not in str(err.value)


def test_unknown_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_filter"):
        from_dict(EncodecConfig, {"num_filter": 8}, "model.yaml")
