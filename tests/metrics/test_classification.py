from __future__ import annotations

import random

import pytest

from seqformer.metrics.classification import (
    accuracy,
    entities,
    entity_f1,
    macro_f1,
    normalize_answer,
    squad,
    squad_scores,
)


def test_accuracy_and_macro_f1_by_hand():
    gold = ["a", "a", "a", "b", "c"]
    pred = ["a", "a", "b", "b", "a"]
    assert accuracy(gold, pred) == pytest.approx(3 / 5)
    # F1(a) = 2*2/(4+1+1) = 2/3, F1(b) = 2/(2+1+0) = 2/3, F1(c) = 0
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_macro_f1_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    gold = [rng.randrange(5) for _ in range(300)]
    pred = [g if rng.random() < 0.6 else rng.randrange(5) for g in gold]
    assert macro_f1(gold, pred) == pytest.approx(sklearn.f1_score(gold, pred, average="macro"))
    assert accuracy(gold, pred) == pytest.approx(sklearn.accuracy_score(gold, pred))


def test_entities_follow_conlleval_rules():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    # An I- without a matching B- starts an entity; a type change ends one.
    assert entities(["I-PER", "I-LOC", "O"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    assert entities(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}


def test_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold 3 entities, pred 3, correct 2 -> P = R = F1 = 2/3
    scores = entity_f1(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)


def test_squad_by_hand():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert squad_scores("the Eiffel tower", ["Eiffel Tower"]) == (1.0, 1.0)
    em, f1 = squad_scores("tower in Paris", ["Eiffel Tower", "Paris"])
    # vs "eiffel tower": common 1, P 1/3, R 1/2 -> 0.4; vs "paris": P 1/3, R 1 -> 0.5
    assert em == 0.0 and f1 == pytest.approx(0.5)
    assert squad(["a b", "x"], [["a b"], ["y"]]) == {"exact": 50.0, "f1": 50.0}
