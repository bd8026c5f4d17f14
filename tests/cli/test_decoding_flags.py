"""``seqformer transduce`` decoding controls: each flag runs and shows its effect; bad values
are one-line errors with exit code 2."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_cli import error_of

from seqformer.cli import main

ALPHABET = "abcdefgh"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny reverse-the-letters model (source chars -> target words), trained in seconds."""
    root = tmp_path_factory.mktemp("flags")
    rng = random.Random(5)
    words = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 6))) for _ in range(400)]
    (root / "train.tsv").write_text("".join(f"{w}\t{' '.join(reversed(w))}\n" for w in words))
    recipe = root / "tiny.yaml"
    recipe.write_text(f"""
data: {{train: {root / 'train.tsv'}, batch_tokens: 400, valid_decode: 10}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 30, lr: 0.003, warmup_steps: 10, eval_every: 30, save_every: 30,
         metric: wer, progress: false, device: cpu}}
""")
    assert main(["train", str(recipe), "--out", str(root / "run")]) == 0
    return root / "run"


def transduce(run: Path, capsys, *args: str) -> list[list[str]]:
    capsys.readouterr()
    assert main(["transduce", "--model", str(run), *args]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]  # keep empty outputs: one line each
    return [line.split() for line in lines]


def test_decoding_flags_run_and_take_effect(run: Path, capsys) -> None:
    inputs = ["abcab", "hgf", "aaaa", "bcd"]
    for beam in ("1", "3"):
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--min-length", "7"):
            assert len(out) >= 7
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--no-repeat-ngram", "1"):
            assert len(out) == len(set(out))
        # Unconstrained, this model says "h h h ..." and "b" for these inputs.
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--bad-words", "b", "h h"):
            assert "b" not in out and "h h" not in " ".join(out)
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--prefix", "h g"):
            assert out[:2] == ["h", "g"]
        assert len(transduce(run, capsys, *inputs, "--beam", beam, "--repetition-penalty",
                             "1.5", "--penalty", "plain", "--alpha", "1")) == len(inputs)


def test_bad_flag_values_are_one_line_errors(run: Path, capsys) -> None:
    base = ["transduce", "--model", str(run), "abc"]
    assert "--min-length must be >= 0" in error_of(base + ["--min-length", "-1"], capsys)
    assert "--no-repeat-ngram must be >= 0" in error_of(base + ["--no-repeat-ngram", "-2"],
                                                        capsys)
    assert "--repetition-penalty must be > 0" in error_of(
        base + ["--repetition-penalty", "0"], capsys)
    assert "unknown to the target vocabulary" in error_of(base + ["--bad-words", "zz"], capsys)
    assert "--prefix" in error_of(base + ["--prefix", "q"], capsys)
    assert "no room below --max-length" in error_of(
        base + ["--min-length", "5", "--max-length", "5"], capsys)
    assert "1 <= --nbest <= --beam" in error_of(base + ["--nbest", "3", "--beam", "2"], capsys)
