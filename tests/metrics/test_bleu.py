"""BLEU/chrF must equal sacrebleu exactly: the wrappers may only reshape references."""

from __future__ import annotations

import pytest
import sacrebleu

from seqformer.metrics import bleu, chrf

HYPS = [
    "the cat sat on the mat",
    "there is a dog in the garden",
    "he read the book yesterday evening",
]
REFS_A = [
    "the cat is sitting on the mat",
    "a dog is in the garden",
    "yesterday evening he read the book",
]
REFS_B = [
    "there is a cat on the mat",
    "there is a dog in the yard",
    "he was reading the book last night",
]


def test_single_reference_equals_sacrebleu() -> None:
    assert bleu(HYPS, REFS_A) == sacrebleu.corpus_bleu(HYPS, [REFS_A]).score
    assert chrf(HYPS, REFS_A) == sacrebleu.corpus_chrf(HYPS, [REFS_A]).score
    assert 0.0 < bleu(HYPS, REFS_A) < 100.0


def test_multiple_references_are_transposed_into_streams() -> None:
    per_sentence = [[a, b] for a, b in zip(REFS_A, REFS_B, strict=True)]
    expected = sacrebleu.corpus_bleu(HYPS, [REFS_A, REFS_B]).score
    assert bleu(HYPS, per_sentence) == expected
    assert chrf(HYPS, per_sentence) == sacrebleu.corpus_chrf(HYPS, [REFS_A, REFS_B]).score
    # A second reference can only help, and here it does.
    assert bleu(HYPS, per_sentence) > bleu(HYPS, REFS_A)


def test_variable_reference_counts_are_padded() -> None:
    per_sentence = [[REFS_A[0], REFS_B[0]], [REFS_A[1]], [REFS_A[2], REFS_B[2]]]
    streams = [REFS_A, [REFS_B[0], None, REFS_B[2]]]
    assert bleu(HYPS, per_sentence) == sacrebleu.corpus_bleu(HYPS, streams).score


def test_perfect_match_scores_100() -> None:
    # sacrebleu itself returns 100.00000000000004 here (float rounding in exp/log), so
    # compare approximately; exact equality with sacrebleu is covered above.
    assert bleu(HYPS, HYPS) == pytest.approx(100.0)
    assert chrf(HYPS, [[h] for h in HYPS]) == pytest.approx(100.0)


@pytest.mark.parametrize("refs", [REFS_A[:2], [[], ["x"], ["y"]]])
def test_bad_reference_layout_is_rejected(refs: list) -> None:
    with pytest.raises(ValueError):
        bleu(HYPS, refs)


def test_ter_equals_sacrebleu_and_signatures_name_the_settings() -> None:
    from seqformer.metrics import signatures, ter

    assert ter(HYPS, REFS_A) == sacrebleu.corpus_ter(HYPS, [REFS_A]).score
    both = [[a, b] for a, b in zip(REFS_A, REFS_B)]
    assert ter(HYPS, both) == sacrebleu.corpus_ter(HYPS, [REFS_A, REFS_B]).score
    sigs = signatures(HYPS, REFS_A)
    assert sigs["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert sigs["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert sigs["ter"].startswith("nrefs:1|case:lc|tok:tercom|")
    assert signatures(HYPS, both)["bleu"].startswith("nrefs:2|")


def test_tokenized_text_is_recognised() -> None:
    from seqformer.metrics import looks_tokenized

    assert looks_tokenized(["Hello , world .", "I don 't know .", "Fine ."])
    assert looks_tokenized(["He said &quot;no&quot; .", "It 's here .", "Yes"])
    assert not looks_tokenized(HYPS + REFS_A)
    assert not looks_tokenized(["Hello, world.", "I don't know.", "TH R UW1"])
