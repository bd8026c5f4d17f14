"""The Audio Spectrogram Transformer: parity with Hugging Face's ASTForAudioClassification
(weights, and waveform -> logits through ASTFeatureExtractor), the overlapping patch grid and
its order, config checks, and a save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop import hf_audio
from seqformer.models.audio import AST, ASTConfig, AudioBatch, SpectrogramPatches

# (frames, mel bins, frequency stride, time stride): overlapping and non-overlapping grids.
SHAPES = [(40, 24, 4, 6), (33, 16, 16, 10)]


def tiny(**overrides) -> AST:
    torch.manual_seed(0)
    base = dict(num_mel_bins=24, max_frames=40, frequency_stride=4, time_stride=6, d_model=16,
                heads=2, layers=2, ffn_dim=32, dropout=0.0, num_labels=4)
    base.update(overrides)
    return AST(ASTConfig(**base)).eval()


def hf_model(frames: int = 40, mel: int = 24, f_stride: int = 4, t_stride: int = 6,
             labels: int = 5):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_length=frames, num_mel_bins=mel, patch_size=16, frequency_stride=f_stride,
        time_stride=t_stride, num_labels=labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    model = transformers.ASTForAudioClassification(config).eval()
    with torch.no_grad():  # HF zero-initialises tokens, positions, biases: make them count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("frames,mel,f_stride,t_stride", SHAPES)
def test_logits_match_hugging_face(frames: int, mel: int, f_stride: int, t_stride: int) -> None:
    hf = hf_model(frames, mel, f_stride, t_stride)
    config = hf_audio.config_from_hf(hf.config)
    assert (config.max_frames, config.num_mel_bins) == (frames, mel)
    ours = AST(config).eval()
    ours.load_state_dict(hf_audio.state_from_hf(hf.state_dict(), config), strict=True)
    assert ours.position.embedding.weight.shape[0] == config.num_patches + 2
    features = torch.randn(3, frames, mel)
    with torch.no_grad():
        expected = hf(input_values=features).logits
        got = ours.logits(features)
    assert float((got - expected).abs().max()) <= 1e-5


def test_legacy_hugging_face_names_map_like_current_ones() -> None:
    hf = hf_model()
    legacy = {}
    for name, tensor in hf.state_dict().items():
        name = name.replace("transformer.layers.", "transformer.encoder.layer.")
        for new, old in (("attention.q_proj", "attention.attention.query"),
                         ("attention.k_proj", "attention.attention.key"),
                         ("attention.v_proj", "attention.attention.value"),
                         ("attention.o_proj", "attention.output.dense"),
                         ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            name = name.replace(new, old)
        legacy[name] = tensor
    current = hf_audio.state_from_hf(hf.state_dict())
    mapped = hf_audio.state_from_hf(legacy)
    assert mapped.keys() == current.keys()
    assert all(torch.equal(mapped[k], current[k]) for k in current)
    with pytest.raises(CheckpointError, match="some.pooler.weight"):
        hf_audio.state_from_hf({**hf.state_dict(), "some.pooler.weight": torch.zeros(1)})
    bare = {k: v for k, v in hf.state_dict().items() if not k.startswith("classifier.")}
    with pytest.raises(CheckpointError, match="no classifier weights"):
        hf_audio.state_from_hf(bare, hf_audio.config_from_hf(hf.config))


def test_seqformer_import_then_waveform_to_logits_matches_hugging_face(tmp_path: Path,
                                                                        capsys) -> None:
    """The whole inference path: raw audio -> our fbank + normalisation -> our AST equals
    ASTFeatureExtractor (its numpy path) -> ASTForAudioClassification."""
    transformers = pytest.importorskip("transformers")
    from seqformer.cli import main
    from seqformer.tasks.audio import AudioClassifier

    hf = hf_model(frames=60, mel=32, f_stride=8, t_stride=8, labels=3)
    hf.config.id2label = {0: "yes", 1: "no", 2: "up"}
    hf.save_pretrained(tmp_path / "hf")
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=60,
                                                 mean=-5.0, std=3.0)
    extractor.save_pretrained(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert "(ast)" in capsys.readouterr().out
    classifier = AudioClassifier.load(tmp_path / "run")
    rng = np.random.default_rng(0)
    # 0.4 s (padded to 60 frames) and 0.8 s (cropped) of a tone in noise
    clips = [(0.3 * np.sin(np.arange(n) * 0.2) + 0.05 * rng.standard_normal(n))
             .astype(np.float32) for n in (6400, 12800)]
    inputs = extractor(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        expected = hf(input_values=inputs).logits
    torch.testing.assert_close(classifier.frontend(clips), inputs, atol=1e-4, rtol=1e-5)
    got = classifier.logits(clips)
    assert float((got - expected).abs().max()) <= 1e-4
    assert classifier.predict(clips) == [["yes", "no", "up"][i]
                                         for i in expected.argmax(-1).tolist()]


def test_patch_grid_overlaps_and_is_frequency_major() -> None:
    config = ASTConfig(num_mel_bins=36, max_frames=26, patch_size=16, frequency_stride=10,
                       time_stride=10, d_model=8, heads=2)
    assert config.grid == (3, 2) and config.max_len == 8  # (36-16)//10+1, (26-16)//10+1
    torch.manual_seed(0)
    embed = SpectrogramPatches(d_model=4, patch_size=16, frequency_stride=10, time_stride=10)
    features = torch.zeros(1, 26, 36)
    base = embed(features)
    assert base.shape == (1, 6, 4)
    features[0, 5, 12] = 1.0  # frame 5 (time patch 0 only), mel 12: frequency patches 0 and 1
    changed = (embed(features) - base).abs().sum(-1)[0]
    assert changed.nonzero().flatten().tolist() == [0, 2]  # f * time_patches + t


def test_forward_loss_and_shape_check() -> None:
    model = tiny()
    features, labels = torch.randn(3, 40, 24), torch.tensor([0, 1, 3])
    out = model(AudioBatch(features, labels))
    assert out.logits.shape == (3, 4) and out.hidden.shape == (3, 2 + 15, 16)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    with pytest.raises(ValueError, match="expected features"):
        model.logits(torch.randn(3, 24, 40))


@pytest.mark.parametrize("field,value,message", [
    ("patch_size", 30, "smaller than model.patch_size"), ("heads", 3, "multiple of"),
    ("num_labels", 1, ">= 2"), ("time_stride", 0, "positive integer"),
    ("activation", "tanh", "activation")])
def test_bad_config_is_a_config_error(field: str, value, message: str) -> None:
    base = dict(num_mel_bins=24, max_frames=40, d_model=16, heads=2)
    with pytest.raises(ConfigError, match=message):
        ASTConfig(**{**base, field: value})


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny()
    model.labels = ["a", "b", "c", "d"]
    model.save(tmp_path / "run", {"mean": -4.0, "std": 3.0})
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["family"] == "ast" and data["features"]["mean"] == -4.0
    assert {"model.safetensors", "config.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    loaded = AST.load(tmp_path / "run")
    features = torch.randn(2, 40, 24)
    with torch.no_grad():
        assert torch.equal(model.logits(features), loaded.logits(features))
    assert loaded.labels == model.labels


def test_loading_another_family_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"family": "vit"}))
    with pytest.raises(CheckpointError, match="not an Audio Spectrogram Transformer"):
        AST.load(tmp_path)
