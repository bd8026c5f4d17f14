"""ViT export to Hugging Face: ``ViTForImageClassification`` + ``ViTImageProcessor`` read it
and give our logits on raw pixels; export -> import returns the same weights; the CLI does it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.errors import ConfigError
from seqformer.interop import hf_vit
from seqformer.interop.hf import export_hf, import_hf
from seqformer.models.vit import ViT, ViTConfig
from seqformer.tasks.vision import ImageClassifier

transformers = pytest.importorskip("transformers")

LABELS = ["cat", "dog", "emu", "yak"]


def run_dir(tmp_path: Path, channels: int, pixel_max: float = 255.0) -> Path:
    """A small random ViT run, every parameter (biases and LayerNorms too) off its init."""
    torch.manual_seed(channels)
    model = ViT(ViTConfig(image_size=8, patch_size=2, channels=channels, d_model=16, heads=2,
                          layers=2, ffn_dim=32, dropout=0.0, num_labels=4), LABELS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / f"run{channels}"
    model.save(out, {"pixel_max": pixel_max, "mean": [0.3, 0.5, 0.2][:channels],
                     "std": [0.4, 0.25, 0.3][:channels]})
    return out


def raw_images(channels: int, n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, channels, 8, 8)).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_transformers_reads_the_export_with_our_logits_on_raw_pixels(
        tmp_path: Path, channels: int, one_thread) -> None:
    run = run_dir(tmp_path, channels)
    assert export_hf(run, tmp_path / "hf") == "vit"
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    processor = transformers.ViTImageProcessor.from_pretrained(tmp_path / "hf")
    assert hf.config.id2label == dict(enumerate(LABELS))
    assert hf.config.label2id == {name: i for i, name in enumerate(LABELS)}
    raw = raw_images(channels)
    # HF's processor wants a channel axis on each image, even for grey ones.
    pixels = processor(list(raw), return_tensors="pt").pixel_values
    classifier = ImageClassifier.load(run)
    ours = classifier.logits(raw.astype(np.float32))
    with torch.no_grad():
        theirs = hf(pixel_values=pixels).logits
    assert float((ours - theirs).abs().max()) <= 1e-5
    assert [hf.config.id2label[i] for i in theirs.argmax(-1).tolist()] == \
        classifier.predict(raw.astype(np.float32))


def test_export_then_import_gives_identical_weights_and_preprocessing(tmp_path: Path,
                                                                      one_thread) -> None:
    run = run_dir(tmp_path, 3, pixel_max=49.0)  # 1 / (1 / 49) is not 49 in floating point
    export_hf(run, tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("*.bin"))  # safetensors only, no pickle
    assert import_hf(tmp_path / "hf", tmp_path / "back") == "vit"
    before, after = ViT.load(run), ViT.load(tmp_path / "back")
    assert before.config == after.config and after.labels == LABELS
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    ours = json.loads((run / "config.json").read_text())["preprocess"]
    back = json.loads((tmp_path / "back" / "config.json").read_text())["preprocess"]
    assert back == ours


def test_cli_export(tmp_path: Path, capsys, one_thread) -> None:
    run = run_dir(tmp_path, 1)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "model_type vit" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    raw = raw_images(1)
    with torch.no_grad():
        theirs = hf(pixel_values=torch.as_tensor((raw / 255.0 - 0.3) / 0.4).float()).logits
    ours = ImageClassifier.load(run).logits(raw.astype(np.float32))
    assert float((ours - theirs).abs().max()) <= 1e-5


def test_only_exact_gelu_exports() -> None:
    model = ViT(ViTConfig(d_model=16, heads=2, activation="relu"))
    with pytest.raises(ConfigError, match="only exact 'gelu'"):
        hf_vit.config_to_hf(model)
