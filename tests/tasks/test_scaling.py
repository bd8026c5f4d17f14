"""``seqformer scale``: sizes, the per-size recipe, a tiny sweep end to end, continuing it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from scaling_helpers import write_recipe

from seqformer.cli import main
from seqformer.errors import ConfigError
from seqformer.metrics.power_law import fit_power_law
from seqformer.recipe import recipe_from_dict
from seqformer.tasks.lm import LanguageModel
from seqformer.tasks.scaling import Size, parse_sizes, size_recipe, tokens_per_step


def test_sizes_keep_the_head_size_unless_given() -> None:
    assert parse_sizes("1x16, 2x32,4x64x2", head_dim=8) == [
        Size(1, 16, 2), Size(2, 32, 4), Size(4, 64, 2)]
    assert parse_sizes("1x4,1x8", head_dim=8)[0].heads == 1  # at least one head


@pytest.mark.parametrize("text, words", [
    ("2x64", "at least two"), ("2x64,2x64", "twice"), ("2-64,3x96", "LAYERSxD_MODEL"),
    ("2x30x4,3x96", "not divisible"), ("0x64,3x96", ">= 1"),
])
def test_bad_sizes_are_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_sizes(text, head_dim=8)


def test_size_recipe_changes_only_the_shape_and_the_schedule(tmp_path: Path) -> None:
    recipe = recipe_from_dict(yaml.safe_load(write_recipe(tmp_path).read_text()))
    sized = size_recipe(recipe, Size(3, 48, 6), steps=40, evals=4, max_minutes=0.0)
    assert sized.model_config(10).layers == 3
    assert (sized.model["d_model"], sized.model["heads"], sized.model["ffn_dim"]) == (48, 6, 96)
    assert sized.train.max_steps == 40 and sized.train.eval_every == 10
    assert sized.train.warmup_steps == 4  # the recipe's 50 would never end in 40 steps
    assert sized.train.metric == "valid_loss" and sized.train.lr == recipe.train.lr
    assert sized.data == recipe.data
    assert tokens_per_step(recipe) == 4 * 16


def test_sweep_end_to_end_then_continued(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path)
    out = tmp_path / "sweep"
    args = ["scale", str(recipe), "--sizes", "1x8,1x16,2x16,2x32", "--tokens", "640",
            "--evals", "2", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| 2x32 |" in printed and "L(N) =" in printed and "L(C) =" in printed
    result = json.loads((out / "scaling.json").read_text())
    rows = result["sizes"]
    assert [r["label"] for r in rows] == ["1x8", "1x16", "2x16", "2x32"]
    assert result["steps"] == 10 and all(r["tokens"] == 640 for r in rows)
    for row in rows:
        model = LanguageModel.load(row["run_dir"]).model
        tables = model.embed.weight.numel() + model.pos.embedding.weight.numel()
        assert row["non_embedding"] == model.num_parameters() - tables
        assert row["params"] == model.num_parameters()
        assert row["flops"] == pytest.approx(model.flops_per_token() * 640)
        assert len(row["curve"]) == 2  # evaluations at steps 5 and 10
        assert row["curve"][-1][1] == row["valid_loss"]
    assert [r["non_embedding"] for r in rows] == sorted(r["non_embedding"] for r in rows)
    law = fit_power_law([r["non_embedding"] for r in rows], [r["valid_loss"] for r in rows])
    assert result["law_n"]["alpha"] == pytest.approx(law.alpha)
    assert result["law_n_floor"] is not None  # four sizes: the floor is fitted too
    assert (out / "scaling.png").stat().st_size > 0 and (out / "scaling.md").is_file()

    # Stopped while training the last size (its directory gone or partial): running the same
    # command again keeps the finished sizes and trains the rest to the same result.
    first_log = (out / "1x8" / "log.jsonl").read_text()
    for name in ("model.safetensors", "last"):
        path = out / "2x32" / name
        path.unlink() if path.is_file() else shutil.rmtree(path)
    assert main(args) == 0
    again = json.loads((out / "scaling.json").read_text())
    assert (out / "1x8" / "log.jsonl").read_text() == first_log
    for a, b in zip(rows, again["sizes"]):
        assert (a["label"], a["valid_loss"]) == (b["label"], b["valid_loss"])


def test_sweep_refuses_other_settings_and_other_tasks(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path)
    out = tmp_path / "sweep"
    assert main(["scale", str(recipe), "--sizes", "1x8,1x16", "--tokens", "128",
                 "--evals", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["scale", str(recipe), "--sizes", "1x8,1x16", "--tokens", "256",
                 "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["scale", str(recipe), "--out", str(tmp_path / "busy")]) == 2
    assert "not a scaling sweep" in capsys.readouterr().err
    assert main(["scale", "g2p-cmudict-quick", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task: lm" in err
