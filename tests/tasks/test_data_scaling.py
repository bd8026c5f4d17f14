"""The loss as a law of the dataset size: ``data.train_tokens`` keeps runs comparable, and
``seqformer scale --data`` sweeps it end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scaling_helpers import write_recipe

from seqformer.cli import main
from seqformer.errors import ConfigError
from seqformer.tasks.data_scaling import parse_data_sizes


def test_train_tokens_cuts_the_training_text_only(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path)
    common = ["--set", "train.max_steps=2", "--set", "train.eval_every=2"]
    assert main(["train", str(recipe), *common, "--out", str(tmp_path / "all")]) == 0
    full = capsys.readouterr().err
    assert main(["train", str(recipe), *common, "--set", "data.train_tokens=500",
                 "--out", str(tmp_path / "cut")]) == 0
    cut = capsys.readouterr().err
    assert " 500 train / " in cut and " 500 train / " not in full
    # Same vocabulary (learnt from the whole text) and the same validation tokens.
    valid = [line.split(" train / ")[1] for line in (full + cut).splitlines()
             if " train / " in line and "tokens" in line]
    assert len(valid) == 2 and valid[0] == valid[1]
    vocab = [json.loads((tmp_path / d / "recipe.yaml").read_text().split("fingerprints:")[1]
                        .split("tokenizer: ")[1].split()[0].join('""'))
             for d in ("all", "cut")]
    assert vocab[0] == vocab[1]
    assert main(["train", str(recipe), "--set", "data.train_tokens=100000000",
                 "--out", str(tmp_path / "big")]) == 2
    assert "data.train_tokens=100,000,000" in capsys.readouterr().err


def test_data_sizes_are_checked() -> None:
    assert parse_data_sizes([3000, 200]) == [200, 3000]
    with pytest.raises(ConfigError, match="at least two"):
        parse_data_sizes([100])
    with pytest.raises(ConfigError, match="twice"):
        parse_data_sizes([100, 100])


def markov_text(n: int = 6000, seed: int = 0) -> str:
    """Characters from a fixed random bigram table: a text whose statistics are learnt better
    from more of it (the repetitive helper text is learnt as well from its first lines)."""
    rng = random.Random(seed)
    letters = "abcdefghij "
    table = {a: [rng.random() ** 3 for _ in letters] for a in letters}
    out, prev = [], "a"
    for _ in range(n):
        prev = rng.choices(letters, weights=table[prev])[0]
        out.append(prev)
    return "".join(out)


def test_data_sweep_end_to_end_then_continued(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path)
    (tmp_path / "text.txt").write_text(markov_text(), encoding="utf-8")
    out = tmp_path / "data"
    args = ["scale", str(recipe), "--data", "200,800,3k", "--tokens", "20000", "--evals",
            "5", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| 200 |" in printed and "L(D) = " in printed
    result = json.loads((out / "data_scaling.json").read_text())
    runs = result["runs"]
    assert [r["data_tokens"] for r in runs] == [200, 800, 3000]
    assert result["size"] == "1x16" and result["tokens"] == 313 * 64
    for r in runs:
        assert r["epochs"] == pytest.approx(result["tokens"] / r["data_tokens"], abs=0.01)
        assert r["best_loss"] == min(v for _, v in r["curve"]) <= r["final_loss"]
        assert Path(r["run_dir"]).name == f"D{r['data_tokens']}"
    # 200 characters of the text cannot teach its bigrams as 3,000 can: a real slope.
    assert runs[0]["best_loss"] > runs[-1]["best_loss"]
    assert result["law_d"]["alpha"] > 0
    assert (out / "data_scaling.png").stat().st_size > 0
    first_log = (out / "D800" / "log.jsonl").read_text()
    assert main(args) == 0  # the same command again reuses every run
    assert (out / "D800" / "log.jsonl").read_text() == first_log
    capsys.readouterr()
    for bad, words in ((["--sizes", "1x8,1x16"], "give one --sizes"),
                       (["--flops", "1e7,2e7"], "two kinds of sweep"),
                       (["--data", "1k,abc"], "--data: 'abc'")):
        assert main(args[:2] + ["--data", "200,800"] + bad + ["--out", str(tmp_path / "x")]) == 2
        assert words in capsys.readouterr().err
