"""Corpus readers: correct pairs, and one-line errors that name file and line."""

from __future__ import annotations

import pytest

from seqformer.data.corpus import Pair, read_aligned, read_lines, read_lines_numbered, read_tsv
from seqformer.errors import DataError, UserError


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_read_tsv_basic(tmp_path) -> None:
    path = write(tmp_path / "train.tsv", "\ufeffcat\tK AE1 T\r\n\n  \ndog \tD AO1 G\n")
    pairs = read_tsv(path)
    assert pairs == [
        Pair("cat", "K AE1 T", where=f"{path}:1"),
        Pair("dog", "D AO1 G", where=f"{path}:4"),
    ]
    assert pairs[0].references == ("K AE1 T",)
    assert Pair("a", "b", refs=("b", "c")).references == ("b", "c")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("a\tb\nonly-one-field\n", 2, "found 1 field;"),
        ("a\tb\tc\n", 1, "found 3 fields"),
        ("a\tb\n\t b\n", 2, "empty source"),
        ("a\tb\nx\t \n", 2, "empty target"),
    ],
)
def test_read_tsv_malformed_line(tmp_path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path / "train.tsv", text)
    with pytest.raises(DataError) as info:
        read_tsv(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert needle in message and "\n" not in message
    assert isinstance(info.value, UserError)


def test_read_tsv_missing_empty_and_bad_utf8(tmp_path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="no examples"):
        read_tsv(write(tmp_path / "empty.tsv", "\n\n"))
    bad = write(tmp_path / "bad.tsv", b"a\tb\nc\xff\td\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: not valid UTF-8"):
        read_tsv(bad)
    with pytest.raises(DataError, match="directory"):
        read_tsv(tmp_path)


def test_read_aligned(tmp_path) -> None:
    src = write(tmp_path / "src.txt", "hello\n\nworld\n")
    tgt = write(tmp_path / "tgt.txt", "bonjour\n\nmonde")
    assert [(p.source, p.target, p.where) for p in read_aligned(src, tgt)] == [
        ("hello", "bonjour", f"{src}:1"),
        ("world", "monde", f"{src}:3"),
    ]


def test_read_aligned_errors(tmp_path) -> None:
    src = write(tmp_path / "src.txt", "a\nb\nc\n")
    tgt = write(tmp_path / "tgt.txt", "x\ny\n")
    with pytest.raises(DataError) as info:
        read_aligned(src, tgt)
    assert all(s in str(info.value) for s in (str(src), str(tgt), "3", "2"))
    write(tgt, "x\n\nz\n")
    with pytest.raises(DataError, match=r"tgt\.txt:2: empty line"):
        read_aligned(src, tgt)


def test_read_lines(tmp_path) -> None:
    path = write(tmp_path / "in.txt", "through\n\n  cat \r\n")
    assert read_lines(path) == ["through", "cat"]
    assert read_lines_numbered(path) == [(1, "through"), (3, "cat")]
    assert read_lines(write(tmp_path / "empty.txt", "")) == []
    with pytest.raises(DataError, match="file not found"):
        read_lines(tmp_path / "missing.txt")
