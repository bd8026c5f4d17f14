"""The command line end to end on a tiny recipe, and every bad input a user can give it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqformer.cli import main

ALPHABET = "abcdefgh"


def write_reverse_tsv(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 6)))
        lines.append(f"{word}\t{' '.join(reversed(word))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    write_reverse_tsv(root / "train.tsv", 600, 1)
    write_reverse_tsv(root / "test.tsv", 40, 2)
    recipe = root / "tiny.yaml"
    recipe.write_text(f"""
name: tiny
data: {{corpus: files, train: {root / 'train.tsv'}, test: {root / 'test.tsv'}, batch_tokens: 400,
        valid_decode: 20}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 40, lr: 0.003, warmup_steps: 10, eval_every: 20, save_every: 20,
         metric: wer, progress: false, device: cpu}}
""")
    run = root / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    return run, root


def test_train_writes_a_complete_run_directory(trained) -> None:
    run, _ = trained
    for name in ("config.json", "recipe.yaml", "model.safetensors", "log.jsonl",
                 "tokenizer/source/tokenizer.json", "tokenizer/target/tokenizer.json",
                 "test.hyp.tsv"):
        assert (run / name).is_file(), name
    assert "fingerprints" in (run / "recipe.yaml").read_text()


def test_transduce_and_evaluate(trained, capsys) -> None:
    run, root = trained
    capsys.readouterr()
    assert main(["transduce", "--model", str(run), "abc", "hgfe"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(set(line.split()) <= set(ALPHABET) for line in lines)
    assert main(["transduce", "--model", str(run), "--beam", "3", "--nbest", "2", "abc"]) == 0
    nbest = capsys.readouterr().out.strip().splitlines()
    assert len(nbest) == 2 and all(line.startswith("abc\t") for line in nbest)
    assert main(["evaluate", "--model", str(run), "--data", str(root / "test.tsv")]) == 0
    out = capsys.readouterr().out
    assert "PER" in out and "WER" in out and "BLEU" in out and "ROUGEL" in out
    hyps = (run / "eval.hyp.tsv").read_text().strip().splitlines()
    assert len(hyps) == len({line.split("\t")[0] for line in
                             (root / "test.tsv").read_text().splitlines()})


def test_evaluate_defaults_to_the_recipes_test_split(trained, tmp_path, capsys) -> None:
    run, root = trained
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(root / "test.tsv")]) == 0
    given = capsys.readouterr().out.splitlines()[0]
    assert main(["evaluate", "--model", str(run)]) == 0
    default = capsys.readouterr().out.splitlines()[0]
    assert default.startswith("the recipe's test split (")
    assert default.split(":", 1)[1] == given.split(":", 1)[1]  # the same scores

    # The data changed since training: the split fingerprint no longer matches.
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    changed = tmp_path / "test.tsv"
    write_reverse_tsv(changed, 40, 3)
    recipe = copy / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace(str(root / "test.tsv"), str(changed)))
    assert "the model was trained on split" in error_of(["evaluate", "--model", str(copy)],
                                                          capsys)
    tree = yaml.safe_load(recipe.read_text())
    tree["data"]["test"] = None
    recipe.write_text(yaml.safe_dump(tree))
    assert "has no test split" in error_of(["evaluate", "--model", str(copy)], capsys)


def test_unknown_characters_are_counted(trained, capsys) -> None:
    run, _ = trained
    assert main(["transduce", "--model", str(run), "abz"]) == 0
    assert "1 source symbol(s) unknown" in capsys.readouterr().err


def error_of(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqformer: error: ") and "\n" not in err, err
    return err


def test_bad_inputs_give_one_line_errors(trained, tmp_path, capsys) -> None:
    run, root = trained
    assert "no such recipe" in error_of(["train", str(tmp_path / "nope.yaml")], capsys)

    typo = tmp_path / "typo.yaml"
    typo.write_text(f"data: {{train: {root / 'train.tsv'}, batch_token: 10}}\n")
    assert "unknown field 'data.batch_token'; did you mean 'data.batch_tokens'" in error_of(
        ["train", str(typo)], capsys)
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"data: {{train: {root / 'train.tsv'}}}\n")
    assert "did you mean 'model.layers'" in error_of(
        ["train", str(plain), "--set", "model.layer=4"], capsys)
    assert "train.max_steps expects int" in error_of(
        ["train", str(plain), "--set", "train.max_steps=many"], capsys)
    assert "bleu is better when higher; set train.metric_mode: max" in error_of(
        ["train", str(plain), "--set", "train.metric=bleu"], capsys)
    assert "rougeL is better when higher; set train.metric_mode: max" in error_of(
        ["train", str(plain), "--set", "train.metric=rougeL"], capsys)

    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("ab\tb a\nno tab here\n")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"data: {{train: {bad_tsv}}}\n")
    assert f"{bad_tsv}:2" in error_of(["train", str(recipe), "--out", str(tmp_path / "r")],
                                      capsys)

    assert "not a seqformer model" in error_of(["transduce", "--model", str(tmp_path), "ab"],
                                               capsys)
    assert "no such model directory" in error_of(
        ["transduce", "--model", str(tmp_path / "missing"), "ab"], capsys)
    assert "longer than the model's maximum" in error_of(
        ["transduce", "--model", str(run), "a" * 40], capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "empty" in error_of(["transduce", "--model", str(run), "--input", str(empty)], capsys)
    assert "nothing to resume" in error_of(
        ["train", str(recipe), "--out", str(tmp_path / "fresh"), "--resume"], capsys)
    assert "not found" in error_of(
        ["evaluate", "--model", str(run), "--data", str(tmp_path / "none.tsv")], capsys)


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path, capsys) -> None:
    run, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "recipe.yaml"):
        (broken / name).write_bytes((run / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert "model.safetensors" in error_of(["transduce", "--model", str(broken), "ab"], capsys)


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "seqformer.cli", "recipes"], capture_output=True,
                         text=True, check=True).stdout
    assert "g2p-cmudict-quick" in out and "bible-en-es" in out


def test_a_closed_pipe_is_not_a_traceback(trained) -> None:
    """``seqformer transduce ... | head -1``: the reader leaves early; the command must stop
    quietly (exit 141, like a process killed by SIGPIPE), not print a traceback."""
    run, _ = trained
    words = "\n".join("abcdefgh"[i % 8:] + "ab" for i in range(8000)) + "\n"
    proc = subprocess.Popen([sys.executable, "-m", "seqformer.cli", "transduce", "--model",
                             str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(words.encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert first.strip() and "Traceback" not in err and "BrokenPipe" not in err


def test_recipes_lists_each_with_its_task_and_purpose(capsys) -> None:
    from seqformer.recipe import bundled_recipes, load_recipe

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(bundled_recipes())
    for line in lines:
        name, task, summary = line.split(None, 2)
        assert task == "compare" or task == getattr(load_recipe(name), "task", "transduction")
        assert len(summary) >= 20 and "#" not in summary
    dt = next(line for line in lines if line.startswith("dt-gridworld "))
    assert "(Chen et al. 2021)" in dt  # not cut inside the parenthesis


@pytest.mark.parametrize("pad_to", [0, 8])
def test_resume_through_the_cli_is_bit_identical(tmp_path, capsys, pad_to: int) -> None:
    """Train 2N steps straight vs N steps + --resume to 2N: the same weights, bit for bit
    (also with fixed batch shapes, data.pad_to)."""
    from safetensors.torch import load_file

    write_reverse_tsv(tmp_path / "train.tsv", 300, 3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
data: {{train: {tmp_path / 'train.tsv'}, batch_tokens: 200, valid_decode: 10, pad_to: {pad_to}}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.2, max_len: 16}}
train: {{max_steps: 24, lr: 0.003, schedule: noam, warmup_steps: 5, eval_every: 12,
         save_every: 6, metric: wer, progress: false, device: cpu}}
""")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", str(recipe), "--out", str(straight)]) == 0
    assert main(["train", str(recipe), "--out", str(split), "--set", "train.max_steps=12"]) == 0
    assert main(["train", str(recipe), "--out", str(split), "--resume"]) == 0
    a = load_file(straight / "last" / "model.safetensors")
    b = load_file(split / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)


def test_attention_and_plot_commands(trained, tmp_path, capsys) -> None:
    import matplotlib.image

    run, _ = trained
    png, page = tmp_path / "a.png", tmp_path / "a.html"
    assert main(["attention", "--model", str(run), "abcd", "--out", str(png), "--html",
                 str(page)]) == 0
    assert png.stat().st_size > 0 and matplotlib.image.imread(png).shape[0] > 100
    assert page.read_text().count("<img ") == 3 * 1 * (2 + 1)  # kinds x layers x (mean+heads)
    assert main(["attention", "--model", str(run), "abcd", "--kind", "encoder", "--heads",
                 "--out", str(tmp_path / "h.png")]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0

    assert "--layer 5 is out of range" in error_of(
        ["attention", "--model", str(run), "abcd", "--layer", "5", "--out", str(png)], capsys)
    assert "--head 9 is out of range" in error_of(
        ["attention", "--model", str(run), "abcd", "--head", "9", "--out", str(png)], capsys)
    assert "not a seqformer model" in error_of(
        ["attention", "--model", str(tmp_path), "abcd", "--out", str(png)], capsys)
    assert "log.jsonl: not found" in error_of(["plot", str(tmp_path)], capsys)


def test_a_swapped_tokenizer_is_a_clear_error(trained, tmp_path, capsys) -> None:
    """Same vocabulary size, different symbols: the fingerprint stored with the model catches it."""
    import shutil

    from seqformer.data.tokenizer import load_tokenizer

    run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    tok = load_tokenizer(copy / "tokenizer" / "source")
    symbols = tok.symbols[:4] + list(reversed(tok.symbols[4:]))  # same size, other ids
    type(tok)(symbols).save(copy / "tokenizer" / "source")
    assert "fingerprint" in error_of(["transduce", "--model", str(copy), "abc"], capsys)


def test_classify_refuses_a_run_that_is_not_a_classifier(trained, capsys) -> None:
    run, _ = trained
    err = error_of(["classify", "--model", str(run), "abc"], capsys)
    assert "is a seq2seq run; classify takes a classifier" in err
    assert "--top-k must be >= 1" in error_of(["classify", "--model", str(run), "--top-k", "0",
                                               "abc"], capsys)
