"""ROUGE (Lin, 2004): the summarisation metric, recall-oriented n-gram and subsequence overlap.

Why here and not only BLEU: a summary is judged by how much of the reference it covers, and
a shorter output that keeps the key words should not be punished as BLEU's brevity penalty
does. Reported as F1 x 100, averaged over sentences, for:

- ROUGE-1 / ROUGE-2: clipped unigram / bigram overlap;
- ROUGE-L: the longest common subsequence (in order, gaps allowed), so word order counts
  without demanding contiguous n-grams.

Tokenisation is that of Google's ``rouge-score`` package (the usual reference): lower-case,
every run of characters other than a-z and 0-9 is a separator; no stemming (its default).
With several references a sentence takes, per metric, the reference with the best F1 (its
``score_multi``). tests/metrics/test_rouge.py checks equality with that package.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_SEPARATOR = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    return _SEPARATOR.sub(" ", text.lower()).split()


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    """F1 of the clipped n-gram overlap of two token lists."""
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence, one row of the dynamic programme at a time."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(hyp: list[str], ref: list[str]) -> float:
    return _f1(lcs_length(hyp, ref), len(hyp), len(ref))


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``rouge1``, ``rouge2``, ``rougeL``: mean sentence F1 x 100 over the corpus; each
    hypothesis against the best of its references for each metric."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp_text, refs in zip(hypotheses, references):
        hyp = rouge_tokens(hyp_text)
        tokens = [rouge_tokens(r) for r in refs]
        totals["rouge1"] += max(rouge_n(hyp, r, 1) for r in tokens)
        totals["rouge2"] += max(rouge_n(hyp, r, 2) for r in tokens)
        totals["rougeL"] += max(rouge_l(hyp, r) for r in tokens)
    n = max(len(hypotheses), 1)
    return {name: 100.0 * total / n for name, total in totals.items()}
