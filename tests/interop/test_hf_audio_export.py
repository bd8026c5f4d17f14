"""AST export to Hugging Face: ``ASTForAudioClassification`` + ``ASTFeatureExtractor`` read it and
give our logits on raw waveforms; export -> import returns the same weights and features; the
CLI does it; feature settings the extractor cannot express are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.data.fbank import Fbank
from seqformer.errors import ConfigError
from seqformer.interop import hf_audio
from seqformer.interop.hf import export_hf, import_hf
from seqformer.models.audio import AST, ASTConfig
from seqformer.tasks.audio import AudioClassifier

transformers = pytest.importorskip("transformers")

LABELS = ["yes", "no", "up"]


def run_dir(tmp_path: Path, **features: float) -> Path:
    """A small random AST run, every parameter (biases and LayerNorms too) off its init, with
    fitted-looking (non-default) mean / std."""
    torch.manual_seed(0)
    model = AST(ASTConfig(num_mel_bins=24, max_frames=40, patch_size=8, frequency_stride=6,
                          time_stride=5, d_model=16, heads=2, layers=2, ffn_dim=32, dropout=0.0,
                          num_labels=3), LABELS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / "run"
    fbank = Fbank(num_mel_bins=24, max_frames=40, mean=-6.25, std=3.125, **features)
    model.save(out, fbank.to_dict())
    return out


def clips(n: int = 4) -> list[np.ndarray]:
    """Noisy tones of different lengths: shorter and longer than max_frames (pad and crop)."""
    rng = np.random.RandomState(0)
    out = []
    for i, samples in enumerate([3000, 6800, 4100, 9000][:n]):
        t = np.arange(samples) / 16000
        out.append((0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
                    + 0.05 * rng.randn(samples)).astype(np.float32))
    return out


def test_transformers_reads_the_export_with_our_logits_on_raw_audio(tmp_path: Path,
                                                                    one_thread) -> None:
    run = run_dir(tmp_path)
    assert export_hf(run, tmp_path / "hf") == "audio-spectrogram-transformer"
    hf = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    extractor = transformers.ASTFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert hf.config.id2label == dict(enumerate(LABELS))
    assert hf.config.label2id == {name: i for i, name in enumerate(LABELS)}
    waves = clips()
    inputs = extractor(waves, sampling_rate=16000, return_tensors="pt").input_values
    classifier = AudioClassifier.load(run)
    ours = classifier.logits(waves)
    with torch.no_grad():
        theirs = hf(input_values=inputs).logits
    scale = float(ours.abs().max())
    assert float((ours - theirs).abs().max()) <= 1e-5 * max(1.0, scale)
    assert [hf.config.id2label[i] for i in theirs.argmax(-1).tolist()] == \
        classifier.predict(waves)


def test_export_then_import_gives_identical_weights_and_features(tmp_path: Path,
                                                                 one_thread) -> None:
    run = run_dir(tmp_path)
    export_hf(run, tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("*.bin"))  # safetensors only, no pickle
    assert import_hf(tmp_path / "hf", tmp_path / "back") == "ast"
    before, after = AST.load(run), AST.load(tmp_path / "back")
    assert before.config == after.config and after.labels == LABELS
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    ours = json.loads((run / "config.json").read_text())["features"]
    back = json.loads((tmp_path / "back" / "config.json").read_text())["features"]
    assert back == ours


def test_cli_export(tmp_path: Path, capsys, one_thread) -> None:
    run = run_dir(tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "model_type audio-spectrogram-transformer" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]
    hf = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    classifier = AudioClassifier.load(run)
    features = classifier.inputs(clips(2))
    with torch.no_grad():
        theirs = hf(input_values=features).logits
        ours = classifier.model.logits(features)
    assert float((ours - theirs).abs().max()) <= 1e-5


def test_features_the_extractor_cannot_compute_are_refused(tmp_path: Path) -> None:
    run = run_dir(tmp_path, frame_shift_ms=12.5)
    with pytest.raises(ConfigError, match="frame_shift_ms=12.5: ASTFeatureExtractor fixes it"):
        export_hf(run, tmp_path / "hf")
    with pytest.raises(ConfigError, match="only exact 'gelu'"):
        hf_audio.config_to_hf(AST(ASTConfig(num_mel_bins=16, max_frames=16, d_model=16,
                                            heads=2, activation="relu")))
