"""Tokenizer contract: fixed special ids, round trips, determinism and save/load identity."""

from __future__ import annotations

import json

import pytest

from seqformer.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    train_tokenizer,
)
from seqformer.errors import CheckpointError, ConfigError, DataError

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "through thick and thin the fox ran",
    "café naïve déjà vu",
]
PHONES = ["TH R UW1", "K AE1 T", "D AO1 G", "TH IH1 K"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    tok = train_tokenizer("bpe", TEXTS * 5, vocab_size=120)
    assert isinstance(tok, BPETokenizer)
    return tok


def test_special_ids_are_fixed_for_every_kind(bpe: BPETokenizer) -> None:
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ["<pad>", "<s>", "</s>", "<unk>"]
    for tok in (train_tokenizer("char", TEXTS), train_tokenizer("word", PHONES), bpe):
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
        assert tok.pieces([0, 1, 2, 3]) == SPECIAL_TOKENS


def test_char_round_trip_and_unknown() -> None:
    tok = train_tokenizer("char", TEXTS)
    assert isinstance(tok, CharTokenizer) and tok.kind == "char"
    ids = tok.encode("the fox")
    assert len(ids) == 7 and BOS_ID not in ids and EOS_ID not in ids
    assert tok.decode(ids) == "the fox"
    assert tok.encode("zQ")[1] == UNK_ID
    assert tok.count_unknown("QQ the Z") == 3
    assert tok.pieces(tok.encode("a b")) == ["a", "\u2423", "b"]


def test_char_vocab_sorted_and_min_frequency() -> None:
    tok = train_tokenizer("char", ["bba", "c"], min_frequency=2)
    assert isinstance(tok, CharTokenizer)
    assert tok.symbols == SPECIAL_TOKENS + ["b"]
    tok = train_tokenizer("char", ["cab"])
    assert tok.encode("abc") == [4, 5, 6]
    assert tok.vocab_size == 7


def test_word_round_trip() -> None:
    tok = train_tokenizer("word", PHONES)
    assert isinstance(tok, WordTokenizer) and tok.kind == "word"
    ids = tok.encode("TH  R UW1")
    assert len(ids) == 3 and tok.decode(ids) == "TH R UW1"
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID]) == "TH R UW1"
    assert tok.encode("TH ZH") == [tok.encode("TH")[0], UNK_ID]


def test_bpe_round_trip(bpe: BPETokenizer) -> None:
    for text in TEXTS:
        ids = bpe.encode(text)
        assert all(i >= 4 for i in ids)
        assert bpe.decode(ids) == text
    assert len(bpe.encode("the fox")) < len("the fox")  # merges actually happened
    assert bpe.count_unknown("the fox \u4e2d") == 1
    assert bpe.decode([BOS_ID, *bpe.encode("the fox"), EOS_ID]) == "the fox"
    assert bpe.vocab_size <= 120


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_preserves_ids_and_fingerprint(kind: str, tmp_path) -> None:
    tok = train_tokenizer(kind, TEXTS, vocab_size=80)
    tok.save(tmp_path)
    meta = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert meta["kind"] == kind
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(tok)
    assert loaded.fingerprint == tok.fingerprint
    assert len(tok.fingerprint) == 16 and int(tok.fingerprint, 16) >= 0
    assert loaded.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert loaded.vocab_size == tok.vocab_size


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_deterministic(kind: str) -> None:
    a = train_tokenizer(kind, TEXTS, vocab_size=80)
    b = train_tokenizer(kind, list(TEXTS), vocab_size=80)
    assert a.fingerprint == b.fingerprint
    assert a.encode(TEXTS[2]) == b.encode(TEXTS[2])
    other = train_tokenizer(kind, TEXTS[:2], vocab_size=80)
    assert other.fingerprint != a.fingerprint


def test_unknown_kind_is_config_error() -> None:
    with pytest.raises(ConfigError, match="char, word, bpe"):
        train_tokenizer("sentencepiece", TEXTS)


def test_empty_texts_is_data_error() -> None:
    with pytest.raises(DataError):
        train_tokenizer("char", [])


def test_load_missing_or_corrupt(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "tokenizer.json").write_text('{"kind": "char", "symbols": ["a"]}')
    with pytest.raises(CheckpointError):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "bpe", "file": "bpe.json"}')
    with pytest.raises(CheckpointError, match="bpe.json"):
        load_tokenizer(tmp_path)
