"""``seqformer word2vec``: vectors from the user's text files or a built-in corpus, written in
word2vec's text format, with the nearest words of the words asked about."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cli_helpers import one_line_error

from seqformer.cli import main
from seqformer.data.fortunes import FORTUNE_DIR
from seqformer.models.word2vec import WordVectors

FAST = ["--dim", "8", "--epochs", "2", "--window", "3", "--min-count", "1", "--no-progress"]


def write_corpus(path: Path, lines: int = 400) -> Path:
    """Lines of words from one of two topics (a0..a7 or b0..b7), blank lines between some."""
    rng = random.Random(0)
    rows = []
    for i in range(lines):
        topic = rng.choice("ab")
        rows.append(" ".join(f"{topic}{rng.randrange(8)}" for _ in range(rng.randint(5, 9))))
        if i % 50 == 0:
            rows.append("")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_word2vec_writes_vectors_and_prints_neighbours(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "vectors.txt"
    code = main(["word2vec", str(corpus), "--out", str(out), *FAST, "--neighbours", "A0",
                 "zebra"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.read_text().splitlines()[0] == "16 8"
    vectors = WordVectors.load(out)
    assert sorted(vectors.words) == sorted(f"{t}{i}" for t in "ab" for i in range(8))
    assert "vocabulary: 16 words" in printed and "pairs" in printed and str(out) in printed
    near = next(line for line in printed.splitlines() if line.startswith("a0: "))
    assert len(near.split(", ")) == 8
    assert near.split()[1] == vectors.most_similar("a0", 1)[0][0]
    assert "zebra: not in the vocabulary" in printed


@pytest.mark.parametrize("problem", ["missing", "directory", "nothing", "both"])
def test_word2vec_input_errors_are_one_line(tmp_path: Path, capsys, problem: str) -> None:
    out = tmp_path / "vectors.txt"
    args = {"missing": [str(tmp_path / "absent.txt")], "directory": [str(tmp_path)],
            "nothing": [], "both": [str(write_corpus(tmp_path / "c.txt")), "--corpus",
                                    "fortunes"]}[problem]
    err = one_line_error(capsys, main(["word2vec", *args, "--out", str(out), *FAST]))
    if problem in ("missing", "directory"):
        assert args[0] in err
    assert not out.exists()


def test_word2vec_options_are_checked(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", 20)
    err = one_line_error(capsys, main(["word2vec", str(corpus), "--out", str(tmp_path / "v"),
                                       *FAST, "--window", "0"]))
    assert "window" in err
    err = one_line_error(capsys, main(["word2vec", str(corpus), "--out", str(tmp_path / "v"),
                                       "--min-count", "1000", "--no-progress"]))
    assert "min_count" in err


@pytest.mark.skipif(not Path(FORTUNE_DIR).is_dir(), reason="Debian's fortunes not installed")
def test_word2vec_on_the_fortunes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fortunes.txt"
    assert main(["word2vec", "--corpus", "fortunes", "--out", str(out), "--dim", "8",
                 "--epochs", "1", "--no-progress", "--neighbours", "computer"]) == 0
    printed = capsys.readouterr().out
    words, dim = out.read_text().split("\n", 1)[0].split()
    assert int(words) > 1000 and dim == "8" and "computer: " in printed
