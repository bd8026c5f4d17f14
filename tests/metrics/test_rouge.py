"""ROUGE equals Google's rouge-score package (the reference implementation) sentence by
sentence, including several references, empty outputs and punctuation."""

from __future__ import annotations

import random

import pytest

from seqformer.metrics.rouge import lcs_length, rouge, rouge_tokens

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")


def corpus(seed: int, n: int = 60) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    words = "the cat sat on a mat dog ran far away, quickly! It's 42 days".split()
    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
    hyps = [sentence() for _ in range(n)]
    refs = [[sentence() or "x" for _ in range(rng.randint(1, 3))] for _ in range(n)]
    hyps[0], refs[0] = "", ["The cat sat."]  # an empty output scores 0
    hyps[1], refs[1] = "The Cat, sat!", ["the cat sat"]  # case and punctuation are separators
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_equals_the_reference_implementation(seed: int) -> None:
    hyps, refs = corpus(seed)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    expected = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hyps, refs, strict=True):
        scores = scorer.score_multi(r, h)
        for name in expected:
            expected[name] += 100 * scores[name].fmeasure / len(hyps)
    ours = rouge(hyps, refs)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9)
    assert 0 < ours["rouge2"] < ours["rouge1"] and ours["rougeL"] <= ours["rouge1"]


def test_pieces() -> None:
    assert rouge_tokens("It's 42 Days!") == ["it", "s", "42", "days"]
    assert lcs_length("a b c d e".split(), "b x d e".split()) == 3
    assert rouge(["the cat"], [["the cat"]]) == {"rouge1": 100.0, "rouge2": 100.0,
                                                 "rougeL": 100.0}
    with pytest.raises(ValueError):
        rouge(["a"], [])
