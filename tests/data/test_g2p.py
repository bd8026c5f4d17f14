"""CMUdict splits: filter, by-word split without leakage, references and determinism."""

from __future__ import annotations

import pytest

from seqformer.data.corpus import Pair
from seqformer.data.g2p import WORD_RE, load_cmudict_splits, split_fingerprint, split_of
from seqformer.errors import ConfigError


@pytest.fixture(scope="module")
def full() -> dict[str, list[Pair]]:
    return load_cmudict_splits()


def test_split_sizes_and_no_leakage(full: dict[str, list[Pair]]) -> None:
    words = {name: {p.source for p in pairs} for name, pairs in full.items()}
    assert set(full) == {"train", "valid", "test"}
    assert not words["train"] & words["valid"]
    assert not words["train"] & words["test"]
    assert not words["valid"] & words["test"]
    total = sum(len(w) for w in words.values())
    assert total > 100_000
    assert 0.03 < len(words["valid"]) / total < 0.07
    assert 0.03 < len(words["test"]) / total < 0.07


def test_filter_and_format(full: dict[str, list[Pair]]) -> None:
    for pairs in full.values():
        for p in pairs[:2000]:
            assert WORD_RE.match(p.source), p.source
            assert p.target == " ".join(p.target.split())
    assert WORD_RE.match("through") and WORD_RE.match("don't")
    assert not WORD_RE.match("'bout") and not WORD_RE.match("a.") and not WORD_RE.match("x2")
    through = [p for p in full[split_of("through")] if p.source == "through"]
    assert through and through[0].target == "TH R UW1"


def test_train_has_one_pair_per_pronunciation_eval_has_refs(full) -> None:
    train_words = [p.source for p in full["train"]]
    assert len(train_words) > len(set(train_words))  # some words have several pronunciations
    assert all(p.refs == () for p in full["train"])
    for name in ("valid", "test"):
        assert len({p.source for p in full[name]}) == len(full[name])
        assert all(p.refs and p.refs[0] == p.target for p in full[name])
    assert any(len(p.refs) > 1 for p in full["test"])


def test_max_words_subset_is_deterministic(full: dict[str, list[Pair]]) -> None:
    a, b = load_cmudict_splits(max_words=300), load_cmudict_splits(max_words=300)
    assert a == b and split_fingerprint(a) == split_fingerprint(b)
    words = {p.source for pairs in a.values() for p in pairs}
    assert len(words) == 300
    for name, pairs in a.items():  # a word keeps its split whatever the subset size
        assert all(split_of(p.source) == name for p in pairs)
    assert a["valid"] and a["test"]
    assert split_fingerprint(a) != split_fingerprint(full)
    assert len(split_fingerprint(a)) == 16
    with pytest.raises(ConfigError):
        load_cmudict_splits(max_words=0)


def test_without_stress_is_the_39_phone_set_with_merged_references(
    full: dict[str, list[Pair]]
) -> None:
    bare = load_cmudict_splits(stress=False)
    for name in ("valid", "test"):  # same words, same order
        assert [p.source for p in bare[name]] == [p.source for p in full[name]]
    phones = {ph for pairs in bare.values() for p in pairs
              for r in p.references for ph in r.split()}
    assert len(phones) == 39 and not any(ch.isdigit() for ph in phones for ch in ph)
    # Pronunciations that differed only in stress become one ("project": PR AA1 JH EH0 K T /
    # PR AA0 JH EH1 K T ...), so train loses examples and references stay distinct.
    assert len(bare["train"]) < len(full["train"])
    for p in bare["test"]:
        assert len(set(p.references)) == len(p.references)
    with_stress = {p.source: p for p in full["test"]}
    merged = [p for p in bare["test"] if len(p.references) < len(with_stress[p.source].references)]
    assert merged


def test_recipe_stress_field_is_checked() -> None:
    from seqformer.recipe import load_recipe

    assert load_recipe("g2p-cmudict-quick", ["data.stress=false"]).data.stress is False
    with pytest.raises(ConfigError, match="data.stress applies to corpus: cmudict only"):
        load_recipe("g2p-cmudict-quick", ["data.corpus=bible", "data.stress=false"])
