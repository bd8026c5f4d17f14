"""Language-model text handling: files, the held-out tail, BOS-prefixed ids, BPE round trips."""

from __future__ import annotations

import pytest

from seqformer.data.lm import encode_text, read_text_files, split_tail
from seqformer.data.tokenizer import BOS_ID, UNK_ID, train_tokenizer
from seqformer.errors import DataError
from seqformer.tasks.lm import decode

TEXT = "".join(f"line {i} of the text, and more words.\n" for i in range(200))


def test_files_are_joined_on_line_boundaries(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    assert read_text_files([tmp_path / "a.txt", tmp_path / "b.txt"]) == "first\nsecond\n"
    with pytest.raises(DataError, match="missing.txt: no such text file"):
        read_text_files([tmp_path / "missing.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_text_files([tmp_path / "latin1.txt"])


def test_validation_is_the_contiguous_tail_cut_at_a_line_start() -> None:
    train, valid = split_tail(TEXT, 5.0)
    assert train + valid == TEXT
    assert train.endswith("\n") and valid.startswith("line ")
    assert 0.04 < len(valid) / len(TEXT) < 0.06
    with pytest.raises(DataError, match="too short"):
        split_tail("x\n", 5.0)


def test_char_ids_start_with_bos_and_unknown_characters_map_to_unk() -> None:
    tok = train_tokenizer("char", [TEXT])
    ids = encode_text(tok, "line 7\n")
    assert ids[0] == BOS_ID and len(ids) == 8 and decode(tok, ids) == "line 7\n"
    assert encode_text(tok, "Z")[1] == UNK_ID


def test_bpe_round_trips_multi_line_text() -> None:
    tok = train_tokenizer("bpe", TEXT.splitlines(keepends=True), 200)
    sample = "line 3 of the text, and more words.\nline 42 of the text.\n"
    ids = encode_text(tok, sample)
    assert ids[0] == BOS_ID and UNK_ID not in ids
    assert len(ids) < len(sample)  # merges happened
    assert decode(tok, ids) == sample
