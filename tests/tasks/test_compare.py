"""``seqformer compare`` end to end on tiny settings: a length sweep and a TSV task."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from seqformer.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from test_cli import error_of, write_reverse_tsv  # noqa: E402

MODELS = """models:
  transformer: {kind: transformer, d_model: 16, heads: 2, layers: 1, ffn_dim: 32, dropout: 0.0}
  gru: {kind: gru, attention: bahdanau, embed_dim: 8, hidden_size: 16, dropout: 0.0}
train: {max_steps: 6, lr: 0.003, warmup_steps: 2, eval_every: 6, save_every: 6, log_every: 2,
        metric: wer, progress: false, device: cpu}
"""


def table_rows(out: Path) -> list[list[str]]:
    lines = (out / "compare.md").read_text().strip().splitlines()
    assert lines[0].startswith("| task | model | kind | params |")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_length_sweep(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "sweep.yaml"
    recipe.write_text("""name: sweep
task: compare
synthetic: {task: reverse, lengths: [4, 7], train_examples: 60, valid_examples: 10,
            test_examples: 10, symbols: 5}
data: {batch_tokens: 200, valid_decode: 5}
tokenizer: {source: word, target: word}
""" + MODELS)
    out = tmp_path / "out"
    assert main(["compare", str(recipe), "--out", str(out)]) == 0
    rows = table_rows(out)
    assert [(r[0], r[1]) for r in rows] == [("reverse-4", "transformer"), ("reverse-4", "gru"),
                                            ("reverse-7", "transformer"), ("reverse-7", "gru")]
    assert rows[1][2] == "gru+bahdanau" and rows[0][2] == "transformer"
    results = json.loads((out / "compare.json").read_text())
    for row, result in zip(rows, results):
        run = Path(result["run_dir"])
        assert (run / "model.safetensors").is_file()
        config = json.loads((run / "config.json").read_text())
        assert config["max_len"] >= result["length"] + 2  # room for the whole sequence
        recipe_yaml = yaml.safe_load((run / "recipe.yaml").read_text())
        assert recipe_yaml["decode"]["max_length"] == result["length"] + 1
        assert int(row[3].replace(",", "")) == result["params"] > 0
        assert all(result[k] > 0 for k in ("epoch_s", "train_tok_s", "decode_sent_s"))
        assert 0 <= result["wer"] <= 100
    tsv = (out / "data" / "reverse-7" / "test.tsv").read_text().splitlines()
    assert all(len(line.split("\t")[0].split()) == 7 for line in tsv)
    assert (out / "compare.png").stat().st_size > 1000
    assert "4 runs" in capsys.readouterr().out
    # The same output directory again: refused before anything trains.
    assert "already holds a run" in error_of(["compare", str(recipe), "--out", str(out)],
                                             capsys)


def test_one_task_from_files_and_errors(tmp_path: Path, capsys) -> None:
    write_reverse_tsv(tmp_path / "train.tsv", 120, 1)
    write_reverse_tsv(tmp_path / "test.tsv", 10, 2)
    recipe = tmp_path / "files.yaml"
    recipe.write_text(f"""name: files
task: compare
data: {{corpus: files, train: {tmp_path / 'train.tsv'}, test: {tmp_path / 'test.tsv'},
        batch_tokens: 200, valid_decode: 5, valid_percent: 20}}
tokenizer: {{source: char, target: word}}
""" + MODELS)
    out = tmp_path / "out"
    assert main(["compare", str(recipe), "--out", str(out), "--set",
                 "models.gru.attention=luong-dot"]) == 0
    rows = table_rows(out)
    assert [r[1] for r in rows] == ["transformer", "gru"] and rows[1][2] == "gru+luong-dot"
    assert (out / "compare.png").is_file()
    message = error_of(["compare", str(recipe), "--set", "models.gru.hiden_size=8"], capsys)
    assert re.search(r"models\.gru.*hidden_size", message), message
    message = error_of(["compare", str(recipe), "--set", "models.gru.kind=cnn"], capsys)
    assert "model.kind" in message
