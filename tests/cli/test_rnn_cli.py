"""``model.kind: gru`` through the whole command line: train, transduce, evaluate, attention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import ALPHABET, error_of, write_reverse_tsv

from seqformer.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rnn_cli")
    write_reverse_tsv(root / "train.tsv", 300, 1)
    write_reverse_tsv(root / "test.tsv", 20, 2)
    recipe = root / "tiny.yaml"
    recipe.write_text(f"""
name: tiny-rnn
data: {{corpus: files, train: {root / 'train.tsv'}, test: {root / 'test.tsv'}, batch_tokens: 400,
        valid_decode: 10}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 20, lr: 0.003, warmup_steps: 5, eval_every: 10, save_every: 10,
         metric: wer, progress: false, device: cpu}}
""")
    run = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small recurrent steps: a second thread only adds contention
    try:
        # The Transformer fields in the file must go: an RNN config has none of them.
        assert main(["train", str(recipe), "--out", str(run), "--set", "model={}",
                     "--set", "model.kind=gru", "--set", "model.attention=bahdanau",
                     "--set", "model.embed_dim=16", "--set", "model.hidden_size=32",
                     "--set", "model.max_len=16", "--set", "model.dropout=0.0"]) == 0
    finally:
        torch.set_num_threads(threads)
    return run, root


def test_gru_recipe_trains_a_recurrent_run(trained) -> None:
    run, _ = trained
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "rnn" and config["kind"] == "gru"
    assert config["attention"] == "bahdanau"
    assert (run / "model.safetensors").is_file() and (run / "test.hyp.tsv").is_file()


def test_transduce_evaluate_and_attention(trained, tmp_path, capsys) -> None:
    run, root = trained
    capsys.readouterr()
    assert main(["transduce", "--model", str(run), "abc", "--beam", "3", "--nbest", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("abc\t") for line in lines)
    assert all(set(line.split("\t")[1].split()) <= set(ALPHABET) for line in lines)
    assert main(["evaluate", "--model", str(run), "--data", str(root / "test.tsv")]) == 0
    assert "WER" in capsys.readouterr().out
    png = tmp_path / "x.png"
    assert main(["attention", "--model", str(run), "abcd", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    report = tmp_path / "r.html"
    assert main(["attention", "--model", str(run), "abcd", "--html", str(report)]) == 0
    page = report.read_text()
    assert "cross attention" in page and "encoder attention" not in page
    assert "has no encoder attention" in error_of(
        ["attention", "--model", str(run), "abcd", "--kind", "encoder", "--out", str(png)],
        capsys)


def test_recipe_errors_name_the_field(trained, capsys) -> None:
    run, root = trained
    recipe = str(root / "tiny.yaml")
    message = error_of(["train", recipe, "--set", "model.kind=lstmm"], capsys)
    assert "model.kind" in message and "lstm" in message
    # A Transformer field on an RNN kind is an unknown field, with the nearest RNN name.
    message = error_of(["train", recipe, "--set", "model.kind=lstm"], capsys)
    assert "model." in message and "unknown" in message.lower()
    message = error_of(["train", recipe, "--set", "model={}", "--set", "model.kind=gru",
                        "--set", "model.hiden_size=8"], capsys)
    assert "hidden_size" in message


def test_attention_chart_of_a_model_without_attention_is_a_clear_error(trained, tmp_path,
                                                                       capsys) -> None:
    import dataclasses
    import shutil

    from seqformer.models.rnn import RNNSeq2Seq

    run, _ = trained
    copy = tmp_path / "none"
    shutil.copytree(run, copy)
    model = RNNSeq2Seq.load(run)
    RNNSeq2Seq(dataclasses.replace(model.config, attention="none")).save(copy)
    message = error_of(["attention", "--model", str(copy), "abc", "--out",
                        str(tmp_path / "x.png")], capsys)
    assert "attention: none" in message
