"""Synthetic copy/reverse data: exact lengths, correct targets, deterministic, disjoint splits."""

from __future__ import annotations

import pytest

from seqformer.data.synthetic import synthetic_pairs, synthetic_splits
from seqformer.errors import ConfigError


def test_targets_and_lengths() -> None:
    for pair in synthetic_pairs("reverse", 7, 20, seed=3, symbols=5):
        tokens = pair.source.split()
        assert len(tokens) == 7 and set(tokens) <= set("abcde")
        assert pair.target.split() == tokens[::-1]
    for pair in synthetic_pairs("copy", 4, 20, seed=3):
        assert pair.target == pair.source and len(pair.source.split()) == 4


def test_deterministic_and_sliceable() -> None:
    whole = synthetic_pairs("copy", 12, 30, seed=1)
    assert whole == synthetic_pairs("copy", 12, 30, seed=1)
    assert whole[10:] == synthetic_pairs("copy", 12, 20, seed=1, offset=10)
    assert whole != synthetic_pairs("copy", 12, 30, seed=2)


def test_test_split_never_repeats_a_training_source() -> None:
    splits = synthetic_splits("reverse", 3, (200, 50, 50), seed=1, symbols=3)  # 27 sequences
    seen = {p.source for p in splits["train"]}
    assert not seen & {p.source for p in splits["test"] + splits["valid"]}
    long = synthetic_splits("reverse", 30, (50, 10, 10), seed=1)
    assert [len(long[k]) for k in ("train", "valid", "test")] == [50, 10, 10]


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="synthetic.task"):
        synthetic_pairs("sort", 5, 1, seed=0)
    with pytest.raises(ConfigError, match="symbols"):
        synthetic_pairs("copy", 5, 1, seed=0, symbols=40)
