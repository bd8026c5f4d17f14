"""Image classification with the ViT: the digits split, .npz input and its errors, learning the
digits, and the CLI end to end (train -> test metrics, evaluate, one-line errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqformer.cli import main
from seqformer.data.images import Preprocess, load_digits_splits, read_npz
from seqformer.errors import ConfigError, DataError
from seqformer.recipe import load_recipe, recipe_from_dict
from seqformer.recipe_vision import VisionRecipe
from seqformer.tasks.vision import ImageClassifier, train_image_classifier

# A small, fast version of the bundled recipe (seconds on one CPU thread).
# 4x4 patches (4 tokens) learn in far fewer steps than the recipe's 2x2 (16 tokens).
TINY = ["model.patch_size=4", "model.d_model=32", "model.heads=2", "model.layers=2",
        "model.ffn_dim=64", "model.dropout=0.0", "data.batch_size=32", "train.epochs=8",
        "train.lr=1e-2", "train.progress=false", "train.device=cpu"]


def test_digits_split_is_stratified_disjoint_and_seeded() -> None:
    a = load_digits_splits(0, 0.1, 0.2)
    b = load_digits_splits(0, 0.1, 0.2)
    c = load_digits_splits(1, 0.1, 0.2)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [1257, 180, 360]
    assert np.array_equal(a["test"].images, b["test"].images)
    assert not np.array_equal(a["test"].images, c["test"].images)
    assert a["train"].images.shape[1:] == (1, 8, 8) and a["train"].pixel_max == 16.0
    counts = np.bincount(a["test"].labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~36 of each digit
    rows = {x.tobytes() for k in ("train", "valid") for x in a[k].images}
    assert not any(x.tobytes() in rows for x in a["test"].images[:50])


def test_preprocess_scales_then_normalises_with_train_statistics() -> None:
    images = np.array([[[[0.0, 8.0], [16.0, 8.0]]]], dtype=np.float32)
    pre = Preprocess.fit(images, 16.0)
    assert pre.mean == [0.5]
    out = pre(images)
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def test_npz_reader_accepts_both_layouts_and_names_what_is_wrong(tmp_path: Path) -> None:
    grey = tmp_path / "grey.npz"
    np.savez(grey, images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1, 1]))
    data = read_npz(grey)
    assert data.images.shape == (3, 1, 4, 4) and data.pixel_max == 255.0
    colour = tmp_path / "colour.npz"
    np.savez(colour, images=np.zeros((2, 3, 4, 4), np.float32), labels=np.array(["a", "b"]))
    assert read_npz(colour).images.shape == (2, 3, 4, 4)

    no_labels = tmp_path / "no-labels.npz"
    np.savez(no_labels, images=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match=r"no-labels.npz: no array named 'labels'"):
        read_npz(no_labels)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, images=np.zeros((3, 4, 4)), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="labels have shape"):
        read_npz(mismatch)
    flat = tmp_path / "flat.npz"
    np.savez(flat, images=np.zeros((3, 16)), labels=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"expected \(N, H, W\) or \(N, C, H, W\)"):
        read_npz(flat)
    with pytest.raises(DataError, match="no such file"):
        read_npz(tmp_path / "missing.npz")


def test_recipe_dispatch_and_validation() -> None:
    recipe = load_recipe("vit-digits")
    assert isinstance(recipe, VisionRecipe) and recipe.train.metric == "valid_accuracy"
    with pytest.raises(ConfigError, match="model.patch_sise"):
        recipe_from_dict({"task": "image-classify", "model": {"patch_sise": 2}})
    with pytest.raises(ConfigError, match="must divide"):
        recipe_from_dict({"task": "image-classify", "model": {"patch_size": 3}})
    with pytest.raises(ConfigError, match="metric_mode"):
        recipe_from_dict({"task": "image-classify",
                          "train": {"metric": "valid_loss", "metric_mode": "max"}})


def test_tiny_vit_learns_the_digits(tmp_path: Path) -> None:
    recipe = load_recipe("vit-digits", TINY)
    summary, test = train_image_classifier(recipe, tmp_path / "run")
    assert test["test_accuracy"] >= 0.85, test
    assert test["test_macro_f1"] >= 0.85, test
    # The saved run predicts from raw pixels (0..16) through the saved preprocessing.
    classifier = ImageClassifier.load(tmp_path / "run")
    split = load_digits_splits(0, 0.1, 0.2)["test"]
    predicted = classifier.predict(split.images[:100])
    hits = sum(p == str(y) for p, y in zip(predicted, split.labels[:100]))
    assert hits >= 80
    assert classifier.evaluate(split)["accuracy"] == pytest.approx(test["test_accuracy"])


def test_cli_trains_prints_test_metrics_and_evaluates(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    sets = [a for s in TINY + ["train.epochs=2"] for a in ("--set", s)]
    assert main(["train", "vit-digits", "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("test: "))
    assert "accuracy" in line and "macro_f1" in line
    assert json.loads((out / "config.json").read_text())["family"] == "vit"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert f"accuracy {metrics['test_accuracy']:.4f}" in line

    # `seqformer classify` on image files: .npy in the model's units (0-16), and the same
    # digits as 8-bit PNGs upscaled 4x -- resized back and rescaled, they get the same labels.
    import matplotlib.image

    split = load_digits_splits(0, 0.1, 0.2)["test"]
    npys, pngs = [], []
    for i in range(6):
        npys.append(tmp_path / f"{i}.npy")
        np.save(npys[-1], split.images[i])
        pngs.append(tmp_path / f"{i}.png")
        big = np.kron(split.images[i][0] / 16.0, np.ones((4, 4)))
        matplotlib.image.imsave(pngs[-1], big, cmap="gray", vmin=0.0, vmax=1.0)
    capsys.readouterr()
    assert main(["classify", "--model", str(out), *map(str, npys)]) == 0
    from_npy = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert from_npy == ImageClassifier.load(out).predict(split.images[:6])
    assert main(["classify", "--model", str(out), *map(str, pngs)]) == 0
    from_png = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert sum(a == b for a, b in zip(from_png, from_npy)) >= 5

    assert main(["evaluate", "--model", str(out)]) == 0
    assert f"accuracy {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    split = load_digits_splits(0, 0.1, 0.2)["test"]
    data = tmp_path / "test.npz"
    np.savez(data, images=split.images[:, 0], labels=split.labels)
    assert main(["evaluate", "--model", str(out), "--data", str(data)]) == 0
    assert "(360 images)" in capsys.readouterr().out


def test_cli_npz_without_labels_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "train.npz"
    np.savez(bad, images=np.zeros((10, 8, 8), np.float32))
    code = main(["train", "vit-digits", "--out", str(tmp_path / "run"),
                 "--set", "data.corpus=files", "--set", f"data.train={bad}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("seqformer: error: ") and "train.npz: no array named 'labels'" in err


def test_evaluate_refuses_a_test_split_the_run_was_not_trained_on(tmp_path: Path,
                                                                  capsys) -> None:
    import yaml

    out = tmp_path / "run"
    sets = [a for s in TINY + ["train.epochs=1"] for a in ("--set", s)]
    assert main(["train", "vit-digits", "--out", str(out), *sets]) == 0
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    trained = recipe["fingerprints"]["split"]
    assert trained
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out)]) == 0  # the same data: the same split
    assert "(360 images)" in capsys.readouterr().out

    # As if the data had changed since training: the recorded split is another one.
    recipe["fingerprints"]["split"] = "0123456789abcdef"
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["evaluate", "--model", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seqformer: error: "), err
    assert f"now gives split {trained}" in err and "trained on split 0123456789abcdef" in err
    assert "recipe.yaml" in err and "give --data FILE.npz instead" in err
