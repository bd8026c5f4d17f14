"""image-caption end to end through the CLI: a tiny train, caption and evaluate (test split and
--data), files recipes, and bad inputs (a missing image, a malformed TSV line, an unknown
recipe field) as exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_helpers import error_line

from seqformer.cli import main
from seqformer.data import shapes
from seqformer.recipe import load_recipe

TINY = ["--set", "data.train_size=64", "--set", "data.valid_size=8", "--set",
        "data.test_size=8", "--set", "data.batch_size=16", "--set", "data.valid_decode=4",
        "--set", "model.d_model=16", "--set", "model.heads=2", "--set",
        "model.encoder_layers=1", "--set", "model.decoder_layers=1", "--set",
        "model.ffn_dim=32", "--set", "model.patch_size=8", "--set", "train.max_steps=4",
        "--set", "train.eval_every=2", "--set", "train.warmup_steps=1", "--set",
        "train.progress=false", "--set", "decode.beam=2"]


def test_bundled_recipe_parses() -> None:
    recipe = load_recipe("caption-shapes")
    assert recipe.task == "image-caption" and recipe.data.corpus == "shapes"
    config = recipe.model_config(22, recipe.data.image_size, 3)
    assert config.image_size == 32 and config.vocab_size == 22


def test_train_caption_evaluate(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "caption-shapes", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "greedy: BLEU" in out and "beam2: BLEU" in out and "shapes/test/0:" in out
    assert "valid (8 images, colour-shape pairs seen in training), greedy: BLEU" in out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"greedy", "beam2"} and metrics["greedy"]["n"] == 8
    assert json.loads((run / "valid_metrics.json").read_text())["greedy"]["n"] == 8
    assert {"bleu", "exact", "colour_acc", "pair_acc"} <= set(metrics["greedy"])
    assert json.loads((run / "config.json").read_text())["family"] == "captioner"

    assert main(["evaluate", "--model", str(run), "--beam", "1"]) == 0
    assert "recipe's test split (8 images, greedy): BLEU" in capsys.readouterr().out
    # A recipe whose data no longer gives the trained-on split is refused, not scored.
    recipe_file = run / "recipe.yaml"
    saved = recipe_file.read_text()
    split = saved.split("  split: ")[1].split()[0]
    recipe_file.write_text(saved.replace(f"split: {split}", "split: ffffffffffffffff"))
    assert main(["evaluate", "--model", str(run)]) == 2
    assert "trained on split ffffffffffffffff" in error_line(capsys)
    recipe_file.write_text(saved)

    test = shapes.make_split(0, "test", 2)
    png, npy = tmp_path / "a.png", tmp_path / "b.npy"
    import matplotlib.image

    matplotlib.image.imsave(png, test.images[0].transpose(1, 2, 0))
    np.save(npy, test.images[1])
    data = tmp_path / "data.tsv"
    data.write_text(f"a.png\t{test.references[0][0]}\nb.npy\t{test.references[1][0]}\n",
                    encoding="utf-8")
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0
    assert "(2 images, beam 2)" in capsys.readouterr().out
    assert (run / "eval.hyp.tsv").read_text().count("\n") == 3

    npz = tmp_path / "c.npz"
    np.savez(npz, images=test.images)
    assert main(["caption", "--model", str(run), str(png), str(npy), str(npz),
                 "--beam", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(png), str(npy), f"{npz}[0]",
                                                        f"{npz}[1]"]
    assert lines[2:] == [f"{npz}[0]\t" + lines[0].split("\t", 1)[1],
                         f"{npz}[1]\t" + lines[1].split("\t", 1)[1]]
    lines = lines[:2]
    from seqformer.tasks.caption import ImageCaptioner

    # The PNG and the array are the same pixels: the CLI and the API caption them alike.
    direct = ImageCaptioner.load(run).caption(test.images, beam=1)
    assert [line.split("\t", 1)[1] for line in lines] == direct

    # A photo of another size and channel count, given with a 32 x 32 scene: resized and
    # converted (data/shapes.fit_image), not refused for differing from the first image.
    big = tmp_path / "big_grey.png"
    matplotlib.image.imsave(big, np.kron(test.images[0].mean(axis=0), np.ones((3, 2))),
                            cmap="gray")
    assert main(["caption", "--model", str(run), str(png), str(big), "--beam", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(png), str(big)]

    assert main(["caption", "--model", str(run), str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such image file" in error_line(capsys)
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.png\ta caption\njust one column\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(run), "--data", str(bad)]) == 2
    line = error_line(capsys)
    assert "bad.tsv:2: expected 'image_path<TAB>caption'" in line


def test_files_recipe_and_recipe_errors(tmp_path: Path, capsys) -> None:
    data = shapes.make_split(1, "train", 24)
    np.savez(tmp_path / "train.npz", images=data.images,
             captions=np.array([r[0] for r in data.references]))
    run = tmp_path / "files"
    files = ["--set", "data.corpus=files", "--set", f"data.train={tmp_path / 'train.npz'}"]
    assert main(["train", "caption-shapes", "--out", str(run), *TINY, *files]) == 0
    out = capsys.readouterr().out
    assert "model saved in" in out and "test (" not in out  # no test file: no test scores
    assert main(["evaluate", "--model", str(run)]) == 2
    assert "has no recipe test split" in error_line(capsys)

    assert main(["train", "caption-shapes", "--out", str(tmp_path / "x"),
                 "--set", "data.valid_sise=3"]) == 2
    line = error_line(capsys)
    assert "data.valid_sise" in line and "valid_size" in line
    assert main(["train", "caption-shapes", "--out", str(tmp_path / "x"),
                 "--set", "model.vocab_size=3"]) == 2
    assert "model.vocab_size" in error_line(capsys)
