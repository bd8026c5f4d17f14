"""Metrics of the encoder tasks: accuracy and macro-F1 (classification), seqeval-style entity
F1 (BIO tagging), and SQuAD's exact match and token F1 (extractive QA).

Written out rather than imported (scikit-learn, seqeval, the SQuAD script) so the library has
no extra dependency; the tests check them against hand-computed values and scikit-learn.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence


def accuracy(gold: Sequence, pred: Sequence) -> float:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    return sum(g == p for g, p in zip(gold, pred)) / max(len(gold), 1)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: classes seen in gold or
    predictions), like ``sklearn.metrics.f1_score(average="macro")``: every class counts the
    same, so a model that ignores the small categories cannot hide behind accuracy."""
    classes = list(labels) if labels is not None else sorted(set(gold) | set(pred), key=str)
    scores = []
    for c in classes:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        scores.append(_f1(tp, fp, fn))
    return sum(scores) / max(len(scores), 1)


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) entity spans of one BIO sequence, end exclusive.

    Follows seqeval's default (conlleval) rules: an ``I-X`` that does not continue an entity of
    type X starts a new one, so ill-formed sequences are read the same way as there.
    """
    spans = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and kind == label
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = label, i
    return spans


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 over exact entity matches (seqeval's default)."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred, strict=True):
        g_set, p_set = entities(g), entities(p)
        tp += len(g_set & p_set)
        n_gold += len(g_set)
        n_pred += len(p_set)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """Exact match and token F1 of one prediction, each the max over the gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    em = f1 = 0.0
    for answer in answers:
        gold_tokens = normalize_answer(answer).split()
        em = max(em, float(pred_tokens == gold_tokens))
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(pred_tokens), common / len(gold_tokens)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
        elif not pred_tokens and not gold_tokens:
            f1 = max(f1, 1.0)
    return em, f1


def squad(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 in percent, as the official SQuAD v1.1 script reports them."""
    scores = [squad_scores(p, a) for p, a in zip(predictions, answers, strict=True)]
    n = max(len(scores), 1)
    return {"exact": 100 * sum(s[0] for s in scores) / n, "f1": 100 * sum(s[1] for s in scores) / n}
