"""EnCodec against Hugging Face's ``EncodecModel``: parity on a tiny perturbed model, import
from a ``save_pretrained`` directory (current and legacy weight-norm names), export that
``from_pretrained`` loads, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import EncodecConfig as HFEncodecConfig
from transformers import EncodecFeatureExtractor, EncodecModel

from seqformer.errors import CheckpointError
from seqformer.interop.hf_encodec import (
    config_from_hf,
    export_encodec,
    import_encodec,
    state_from_hf,
    state_to_hf,
)
from seqformer.models.encodec import Encodec

BANDWIDTHS = (0.8, 3.2)  # 1 and 4 codebooks: 200 frames/s x 4 bits = 0.8 kbps per codebook


def tiny_hf(causal: bool = True, norm_type: str = "weight_norm", normalize: bool = False,
            **overrides: object) -> EncodecModel:
    """A tiny random HF EnCodec whose every weight and codebook is seeded randn: latent frames
    every 6 samples at 1.2 kHz, 16-entry codebooks, up to 4 of them. Each codebook is scaled to
    the residual it codes (on a probe signal) so the codes spread over the codebook instead of
    all falling on one entry: per latent channel, its mean plus randn times its std."""
    config = HFEncodecConfig(num_filters=4, upsampling_ratios=[2, 3], hidden_size=8,
                             codebook_size=16, target_bandwidths=[0.8, 1.6, 3.2],
                             sampling_rate=1200, use_causal_conv=causal, norm_type=norm_type,
                             normalize=normalize, **{"num_lstm_layers": 2, **overrides})
    model = EncodecModel(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "codebook" not in name:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.5)
        residual = model.encoder(torch.randn(4, config.audio_channels, 300, generator=g))
        for layer in model.quantizer.layers:
            book = layer.codebook
            mean, std = residual.mean(dim=(0, 2)), residual.std(dim=(0, 2))
            book.embed.copy_(mean + torch.randn(book.embed.shape, generator=g) * std)
            book.embed_avg.copy_(book.embed)
            book.cluster_size.copy_(torch.rand(book.cluster_size.shape, generator=g) * 10)
            residual = residual - layer.decode(layer.encode(residual))
    return model


def ours_from(hf: EncodecModel) -> Encodec:
    model = Encodec(config_from_hf(hf.config.to_dict()))
    model.load_state_dict(state_from_hf(hf.state_dict()), strict=True)
    return model.eval()


def wave(batch: int = 2, samples: int = 101, seed: int = 1, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(seed))


def assert_same_codec(hf: EncodecModel, ours: Encodec, x: torch.Tensor) -> None:
    """Same codes at every bandwidth of BANDWIDTHS, audio within 1e-5."""
    with torch.no_grad():
        for bandwidth in BANDWIDTHS:
            theirs = hf.encode(x, bandwidth=bandwidth)
            mine = ours.encode(x, bandwidth)
            assert torch.equal(theirs.audio_codes[0], mine.codes)
            audio = hf.decode(theirs.audio_codes, theirs.audio_scales)[0]
            assert (audio - ours.decode(mine.codes, mine.scale)).abs().max() <= 1e-5


@pytest.mark.parametrize(("causal", "norm_type", "normalize"), [
    (True, "weight_norm", False), (False, "weight_norm", False),
    (True, "time_group_norm", True), (False, "time_group_norm", False)])
def test_parity_with_hf(one_thread, causal: bool, norm_type: str, normalize: bool) -> None:
    hf = tiny_hf(causal, norm_type, normalize)
    ours = ours_from(hf)
    x = wave()
    with torch.no_grad():
        assert (hf.encoder(x) - ours.embed(x)).abs().max() <= 1e-6
        codes = ours.encode(x, 3.2).codes
    assert codes.shape == (2, 4, 17)  # ceil(101 / 6) frames
    assert codes.unique().numel() >= 8  # the codes are informative, not one entry everywhere
    assert_same_codec(hf, ours, x)
    with torch.no_grad():  # HF's forward trims to the input length; ours with length=
        full = hf(x, bandwidth=3.2).audio_values
        assert (full - ours.decode(codes, ours.encode(x, 3.2).scale, 101)).abs().max() <= 1e-5


def test_parity_with_hf_other_architecture_settings(one_thread) -> None:
    """Two residual blocks with dilation growth 3, identity shortcuts, zero padding, a causal
    trim split 50/50, a narrower residual branch and one LSTM layer: each field is read."""
    hf = tiny_hf(trim_right_ratio=0.5, num_residual_layers=2, dilation_growth_rate=3,
                 use_conv_shortcut=False, pad_mode="constant", compress=4, num_lstm_layers=1,
                 residual_kernel_size=5, last_kernel_size=3)
    ours = ours_from(hf)
    assert ours.config.trim_right_ratio == 0.5 and not ours.config.use_conv_shortcut
    assert_same_codec(hf, ours, wave(samples=77))


@pytest.mark.parametrize(("normalize", "channels"), [(True, 2), (False, 1)])
def test_parity_with_hf_chunked(one_thread, normalize: bool, channels: int) -> None:
    """The 48 kHz model's mode (stereo, normalised, chunked): 60-sample chunks every 54
    samples, so 150 samples are three chunks of 10, 10 and 7 frames (HF pads the last to 10;
    ours concatenates them)."""
    hf = tiny_hf(normalize=normalize, chunk_length_s=0.05, overlap=0.1,
                 audio_channels=channels)
    ours = ours_from(hf)
    assert (ours.config.chunk_length, ours.config.chunk_stride) == (60, 54)
    x = wave(samples=150, channels=channels)
    with torch.no_grad():
        for bandwidth in BANDWIDTHS:
            theirs = hf.encode(x, bandwidth=bandwidth)
            mine = ours.encode(x, bandwidth)
            assert theirs.audio_codes.shape[0] == 3 and theirs.last_frame_pad_length == 3
            chunks = list(theirs.audio_codes)
            chunks[-1] = chunks[-1][..., :7]
            assert torch.equal(torch.cat(chunks, dim=-1), mine.codes)
            if normalize:
                assert torch.equal(torch.cat(theirs.audio_scales, dim=1), mine.scale)
            else:
                assert mine.scale is None
            audio = hf.decode(theirs.audio_codes, theirs.audio_scales,
                              last_frame_pad_length=3)[0]
            assert audio.shape == (2, channels, 150)
            assert (audio - ours.decode(mine.codes, mine.scale)).abs().max() <= 1e-5


def test_short_input_reflect_padding(one_thread) -> None:
    """A signal shorter than the first conv's padding: reflection needs the zero-extension."""
    hf = tiny_hf(causal=False)
    assert_same_codec(hf, ours_from(hf), wave(samples=4))


def test_import_from_save_pretrained(one_thread, tmp_path: Path) -> None:
    hf = tiny_hf()
    hf.save_pretrained(tmp_path / "hf")
    assert import_encodec(tmp_path / "hf", tmp_path / "ours") == "encodec"
    assert_same_codec(hf, Encodec.load(tmp_path / "ours"), wave())


def test_import_legacy_weight_norm_names(one_thread, tmp_path: Path) -> None:
    """The Hub's facebook/encodec_* files store weight norm as weight_g / weight_v."""
    hf = tiny_hf()
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
              .replace("parametrizations.weight.original1", "weight_v"): v
              for k, v in state.items()}
    assert any(k.endswith("weight_g") for k in legacy)
    save_file(legacy, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    import_encodec(tmp_path / "hf", tmp_path / "ours")
    assert_same_codec(hf, Encodec.load(tmp_path / "ours"), wave())


def test_export_loads_in_transformers(one_thread, tmp_path: Path) -> None:
    ours = ours_from(tiny_hf(causal=False))
    ours.save(tmp_path / "ours")
    assert export_encodec(tmp_path / "ours", tmp_path / "hf") == "encodec"
    hf = EncodecModel.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.use_causal_conv is False
    assert_same_codec(hf, ours, wave())
    extractor = EncodecFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert extractor.sampling_rate == 1200
    # the round trip back keeps our training settings (the config's `seqformer` entry)
    assert config_from_hf(json.loads((tmp_path / "hf" / "config.json").read_text())) \
        == ours.config


def test_state_mapping_round_trip() -> None:
    ours = ours_from(tiny_hf())
    state = ours.state_dict()
    back = state_from_hf(state_to_hf(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert "quantizer.layers.0.codebook.embed" in state_to_hf(state)


def test_refusals(tmp_path: Path) -> None:
    hf = tiny_hf().config.to_dict()
    with pytest.raises(CheckpointError, match="model.overlap in"):
        config_from_hf({**hf, "chunk_length_s": 1.0, "overlap": None})
    with pytest.raises(CheckpointError, match="not encodec"):
        config_from_hf({**hf, "model_type": "wav2vec2"})
    with pytest.raises(CheckpointError, match="codebook_dim"):
        config_from_hf({**hf, "codebook_dim": 4})
    with pytest.raises(CheckpointError, match="no seqformer counterpart"):
        state_from_hf({"head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no such directory"):
        import_encodec(tmp_path / "missing", tmp_path / "out")
    for error in (CheckpointError,):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "config.json").write_text(json.dumps(hf))
        with pytest.raises(error, match="no model.safetensors"):
            import_encodec(tmp_path / "bad", tmp_path / "out")
