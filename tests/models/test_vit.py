"""The Vision Transformer: parity with Hugging Face's ViTForImageClassification, the patch
order, config checks, and a save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop import hf_vit
from seqformer.models.vit import ImageBatch, PatchEmbedding, ViT, ViTConfig


def tiny(**overrides) -> ViT:
    torch.manual_seed(0)
    base = dict(image_size=8, patch_size=2, channels=1, d_model=16, heads=2, layers=2,
                ffn_dim=32, dropout=0.0, num_labels=4)
    base.update(overrides)
    return ViT(ViTConfig(**base)).eval()


def hf_model(channels: int = 3):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=channels, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=10,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # HF zero-initialises biases and LayerNorms: make them count
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("channels", [1, 3])
def test_logits_match_hugging_face(channels: int) -> None:
    hf = hf_model(channels)
    config = hf_vit.config_from_hf(hf.config)
    assert config.layer_norm_eps == 1e-12
    ours = ViT(config).eval()
    ours.load_state_dict(hf_vit.state_from_hf(hf.state_dict(), config), strict=True)
    pixels = torch.randn(5, channels, 8, 8)
    with torch.no_grad():
        expected = hf(pixel_values=pixels).logits
        got = ours.logits(pixels)
    scale = expected.abs().max().clamp(min=1.0)
    assert float((got - expected).abs().max() / scale) < 1e-5


def test_hugging_face_directory_imports(tmp_path: Path) -> None:
    hf = hf_model(1)
    hf.save_pretrained(tmp_path / "hf")
    ours = ViT.from_hf(tmp_path / "hf")
    pixels = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(pixels), hf(pixel_values=pixels).logits,
                                   atol=1e-5, rtol=1e-5)


def test_legacy_hugging_face_names_map_like_current_ones() -> None:
    hf = hf_model(1)
    legacy = {}
    for name, tensor in hf.state_dict().items():
        name = name.replace("vit.layers.", "vit.encoder.layer.")
        for new, old in (("attention.q_proj", "attention.attention.query"),
                         ("attention.k_proj", "attention.attention.key"),
                         ("attention.v_proj", "attention.attention.value"),
                         ("attention.o_proj", "attention.output.dense"),
                         ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            name = name.replace(new, old)
        legacy[name] = tensor
    assert hf_vit.state_from_hf(legacy).keys() == hf_vit.state_from_hf(hf.state_dict()).keys()
    with pytest.raises(CheckpointError, match="vit.pooler.dense.weight"):
        hf_vit.state_from_hf({**hf.state_dict(), "vit.pooler.dense.weight": torch.zeros(1)})


def test_patches_are_row_major_and_each_sees_only_its_square() -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(channels=1, d_model=4, patch_size=2)
    image = torch.zeros(1, 1, 6, 6)
    base = embed(image)
    assert base.shape == (1, 9, 4)  # (6 / 2)^2 patches
    image[0, 0, 2, 5] = 1.0  # row 1, column 2 of the 3 x 3 patch grid -> patch 1 * 3 + 2
    changed = (embed(image) - base).abs().sum(-1)[0]
    assert changed.nonzero().flatten().tolist() == [5]


def test_patch_embedding_is_a_linear_map_of_the_flattened_patch() -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(channels=3, d_model=5, patch_size=4)
    image = torch.randn(2, 3, 8, 8)
    weight = embed.projection.weight.reshape(5, -1)
    patch = image[:, :, 4:8, 0:4].reshape(2, -1)  # grid row 1, column 0 -> index 2
    torch.testing.assert_close(embed(image)[:, 2], patch @ weight.T + embed.projection.bias)


def test_forward_loss_logits_and_cls_position() -> None:
    model = tiny()
    pixels, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 3])
    out = model(ImageBatch(pixels, labels))
    assert out.logits.shape == (3, 4) and out.hidden.shape == (3, 17, 16)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    with pytest.raises(ValueError, match="expected images"):
        model.logits(torch.randn(3, 1, 6, 6))


@pytest.mark.parametrize("field,value,message", [
    ("patch_size", 3, "must divide"), ("heads", 3, "multiple of"), ("num_labels", 1, ">= 2"),
    ("activation", "tanh", "activation"), ("channels", 0, "positive integer")])
def test_bad_config_is_a_config_error(field: str, value, message: str) -> None:
    base = dict(image_size=8, patch_size=2, d_model=16, heads=2)
    with pytest.raises(ConfigError, match=message):
        ViTConfig(**{**base, field: value})


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny()
    model.labels = ["a", "b", "c", "d"]
    model.save(tmp_path / "run", {"pixel_max": 16.0, "mean": [0.3], "std": [0.4]})
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["family"] == "vit" and data["labels"] == ["a", "b", "c", "d"]
    loaded = ViT.load(tmp_path / "run")
    pixels = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.logits(pixels), loaded.logits(pixels))
    assert loaded.labels == model.labels


def test_loading_another_family_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"family": "gpt"}))
    with pytest.raises(CheckpointError, match="not a Vision Transformer"):
        ViT.load(tmp_path)


def test_seqformer_import_writes_a_vit_run(tmp_path: Path, capsys) -> None:
    from seqformer.cli import main
    from seqformer.tasks.vision import ImageClassifier

    hf = hf_model(1)
    hf.config.id2label = {i: f"class{i}" for i in range(10)}
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(
        {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
         "image_mean": [0.5], "image_std": [0.25]}))
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert "(vit)" in capsys.readouterr().out
    classifier = ImageClassifier.load(tmp_path / "run")
    raw = torch.randint(0, 256, (3, 8, 8)).float()
    with torch.no_grad():
        expected = hf(pixel_values=((raw / 255 - 0.5) / 0.25)[:, None]).logits
    torch.testing.assert_close(classifier.logits(raw), expected, atol=1e-5, rtol=1e-5)
    assert classifier.predict(raw) == [f"class{i}" for i in expected.argmax(-1).tolist()]
