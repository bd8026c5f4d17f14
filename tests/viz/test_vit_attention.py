"""ViT attention maps: rollout against a hand computation, the weights against the model's own
q/k projections and layer outputs, logits unchanged by asking for weights, the patch grid's
orientation, and ``seqformer attention`` on a ViT run end to end with its one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.data.images import Preprocess
from seqformer.models.vit import ViT, ViTConfig
from seqformer.tasks.vision import ImageClassifier
from seqformer.viz.vit_attention import (
    cls_to_patches,
    draw,
    head_mean_with_residual,
    rollout,
    upsample,
    vit_attention_maps,
)


def tiny(layers: int = 2, dropout: float = 0.0) -> ViT:
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=2, channels=1, d_model=16, heads=2,
                       layers=layers, ffn_dim=32, dropout=dropout, num_labels=3)
    return ViT(config, ["zero", "one", "two"]).eval()


def tiny_colour() -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(image_size=8, patch_size=4, channels=3, d_model=16, heads=2, layers=1,
                         ffn_dim=32, dropout=0.0, num_labels=2)).eval()


def test_rollout_equals_a_hand_computation_on_a_two_layer_toy() -> None:
    # Layer 1: heads differ, mean [[0,.5,.5],[0,1,0],[0,0,1]] -> +I, rows renormalised.
    h1 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1]])
    h2 = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    layer1 = torch.stack([h1, h2])
    a1 = torch.tensor([[0.5, 0.25, 0.25], [0, 1, 0], [0, 0, 1]])
    # Layer 2: both heads swap tokens 0 and 2.
    swap = torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
    layer2 = torch.stack([swap, swap])
    a2 = torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]])
    torch.testing.assert_close(head_mean_with_residual(layer1), a1)
    torch.testing.assert_close(head_mean_with_residual(layer2), a2)
    # A2 @ A1, worked out by hand: the later layer mixes what the earlier one produced.
    expected = torch.tensor([[0.25, 0.125, 0.625], [0, 1, 0], [0.25, 0.125, 0.625]])
    torch.testing.assert_close(rollout([layer1, layer2]), expected)
    assert not torch.allclose(rollout([layer2, layer1]), expected)  # the order matters


def test_rollout_rows_sum_to_one_with_batch_dimensions() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(3, 4, 5, 5).softmax(-1) for _ in range(4)]  # (batch, heads, T, T)
    joint = rollout(weights)
    assert joint.shape == (3, 5, 5)
    torch.testing.assert_close(joint.sum(-1), torch.ones(3, 5))
    assert (joint >= 0).all()
    for b in range(3):  # each image on its own gives the same
        torch.testing.assert_close(rollout([w[b] for w in weights]), joint[b])
    with pytest.raises(ValueError, match="at least one layer"):
        rollout([])


def test_cls_row_lands_on_its_patch_in_row_major_order() -> None:
    t = 1 + 16  # [CLS] + a 4x4 grid
    matrix = torch.zeros(t, t)
    matrix[0, 1 + 1 * 4 + 2] = 1.0  # [CLS] -> the patch in grid row 1, column 2
    matrix[1, 1] = 5.0  # other rows are not [CLS]'s
    grid = cls_to_patches(matrix)
    assert grid.shape == (4, 4) and grid[1, 2] == 1.0 and grid.sum() == 1.0
    image = upsample(grid, 8)  # 2x2 pixels per patch
    assert image.shape == (8, 8)
    row, col = divmod(int(image.argmax()), 8)
    assert row in (2, 3) and col in (4, 5)
    torch.testing.assert_close(upsample(torch.full((2, 4, 4), 0.3), 8), torch.full((2, 8, 8), 0.3))
    with pytest.raises(ValueError, match="square grid"):
        cls_to_patches(torch.zeros(6, 6))


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def test_weights_equal_softmax_of_the_layers_own_queries_and_keys() -> None:
    """Layer by layer, the weights returned are softmax(QK^T / sqrt(d)) of that layer's q/k
    projections of its normalised input, and weights @ V through the rest of the layer gives
    that layer's output."""
    model = tiny(layers=3)
    pixels = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        weights = model.attention_weights(pixels)
        assert len(weights) == 3
        x = model.encoder_input(pixels)
        for layer, got in zip(model.encoder.layers, weights):
            attn = layer.self_attn
            h = layer.attn_block.norm(x)
            q, k, v = (_split(proj(h), attn.heads)
                       for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            by_hand = (q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)).softmax(-1)
            assert got.shape == (2, 2, 17, 17)
            torch.testing.assert_close(got, by_hand)
            torch.testing.assert_close(got.sum(-1), torch.ones(2, 2, 17))
            mixed = (got @ v).transpose(1, 2).reshape(x.shape)
            after_attention = x + attn.out_proj(mixed)
            rebuilt = layer.ffn_block(after_attention, layer.ffn)
            x, _ = layer(x)  # the fused path, as training and classify run it
            torch.testing.assert_close(rebuilt, x)


def test_logits_are_unchanged_by_asking_for_weights() -> None:
    model = tiny()
    pixels = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        plain = model.logits(pixels)
        logits, weights = model.logits_and_attention(pixels)
    torch.testing.assert_close(logits, plain)
    assert len(weights) == model.config.layers


def test_weights_are_read_in_eval_mode_and_the_mode_is_restored() -> None:
    model = tiny(dropout=0.5)
    pixels = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = model.logits(pixels)  # eval: no dropout
        model.train()
        first, weights = model.logits_and_attention(pixels)
        second = model.attention_weights(pixels)
    assert model.training
    torch.testing.assert_close(first, expected)
    for a, b in zip(weights, second):
        assert torch.equal(a, b)


def _run(tmp_path: Path, layers: int = 2) -> Path:
    run = tmp_path / "vit"
    tiny(layers).save(run, {"pixel_max": 16.0, "mean": [0.3], "std": [0.4]})
    return run


def test_maps_follow_the_models_prediction_and_the_figure_has_a_panel_per_layer(
        tmp_path: Path) -> None:
    classifier = ImageClassifier.load(_run(tmp_path, layers=9))
    image = np.random.default_rng(0).uniform(0, 16, (1, 8, 8)).astype(np.float32)
    maps = vit_attention_maps(classifier, image, "x")
    [(label, p)] = classifier.rank(image[None])[0]
    assert maps.label == label and maps.probability == pytest.approx(p, abs=1e-5)
    assert maps.layer_maps.shape == (9, 8, 8) and maps.rollout_map.shape == (8, 8)
    fig = draw(maps)
    shown = [ax for ax in fig.axes if ax.axison or ax.images]
    assert len(shown) == 2 + 9  # image, rollout, one per layer (wrapped over two rows)
    drawn = fig.axes[1].images[-1].get_array()  # the rollout panel's map, scaled to its max
    np.testing.assert_allclose(drawn, (maps.rollout_map / maps.rollout_map.max()).numpy())
    assert fig.axes[1].collections  # and the digit's strokes as contour lines over it
    drawn = fig.axes[2 + 8].images[-1].get_array()  # the last layer's
    np.testing.assert_allclose(drawn, (maps.layer_maps[8] / maps.layer_maps[8].max()).numpy())


def test_a_colour_image_shows_through_a_translucent_map() -> None:
    classifier = ImageClassifier(tiny_colour(), Preprocess(255.0, [0.5] * 3, [0.25] * 3))
    image = np.random.default_rng(0).uniform(0, 255, (3, 8, 8)).astype(np.float32)
    fig = draw(vit_attention_maps(classifier, image))
    photo, heat = fig.axes[1].images
    assert photo.get_array().shape == (8, 8, 3) and heat.get_alpha() < 1


def test_cli_charts_a_vit_run(tmp_path: Path, capsys) -> None:
    import matplotlib.image

    run = _run(tmp_path)
    rng = np.random.default_rng(0)
    npy, png_in = tmp_path / "big.npy", tmp_path / "in.png"
    np.save(npy, rng.uniform(0, 16, (16, 16)).astype(np.float32))  # resized to 8x8
    matplotlib.image.imsave(png_in, rng.uniform(0, 1, (8, 8)), cmap="gray")
    for image in (npy, png_in):
        out = tmp_path / f"{image.stem}-attention.png"
        assert main(["attention", "--model", str(run), str(image), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"{image} -> " in printed and f"chart written to {out}" in printed
        chart = matplotlib.image.imread(out)
        assert chart.shape[0] > 100 and chart.shape[1] > 400


def _one_line_error(code: int, capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("seqformer: error: "), err
    return err


@pytest.mark.parametrize("make,flags,message", [
    (None, [], "no such image file"),
    ("notes.txt", [], "unsupported image type .txt"),
    ("x.npy", ["--html", "r.html"], "give IMAGE --out FIG.png; drop --html"),
    ("x.npy", ["--kind", "encoder", "--head", "1"], "drop --kind --head"),
])
def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys, make: str | None,
                                       flags: list[str], message: str) -> None:
    run = _run(tmp_path)
    image = tmp_path / (make or "missing.png")
    if make == "notes.txt":
        image.write_text("not an image")
    elif make:
        np.save(image, np.zeros((8, 8), np.float32))
    out = tmp_path / "fig.png"
    code = main(["attention", "--model", str(run), str(image), "--out", str(out), *flags])
    assert message in _one_line_error(code, capsys)
    assert not out.exists()
