"""Edit distance and the error rates used to evaluate grapheme-to-phoneme (G2P) models.

Definitions follow the G2P literature (e.g. Yolchuyeva, Németh & Gyires-Tóth, "Transformer
based grapheme-to-phoneme conversion", Interspeech 2019, and the CMUdict results it compares
against), where a word may have several correct pronunciations:

* **PER** (phoneme error rate) = sum over words of the Levenshtein distance between the
  predicted phones and the *closest* reference, divided by the summed length of those
  closest references, in percent. Ties between references go to the shorter one, so the
  denominator never rewards an item for picking a long reference.
* **WER** (word error rate) = percentage of words whose prediction equals *none* of the
  references. In G2P a "word" is one whole item, so this is a sequence error rate, not the
  token-level WER of speech recognition.

Both are computed over whitespace-separated tokens, so "TH R UW1" has three phones and
spacing differences never count as errors.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

RefSet = str | Sequence[str]


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute) between two sequences.

    Plain O(len(a) * len(b)) dynamic programming with two rows: G2P and test-time sequences
    are short, so this beats the overhead of a C extension dependency. Common prefixes and
    suffixes are stripped first because predictions are usually nearly right.
    """
    start, end_a, end_b = 0, len(a), len(b)
    while start < end_a and start < end_b and a[start] == b[start]:
        start += 1
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a  # keep the row (over b) as short as possible
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _as_refs(refs: RefSet) -> list[list[str]]:
    """Tokenise one item's references; a bare string means a single reference.

    Accepting a bare string guards against the classic bug of iterating a string as if it were
    a tuple of references (each character would become a "reference").
    """
    items = [refs] if isinstance(refs, str) else list(refs)
    if not items:
        raise ValueError("every item needs at least one reference; got an empty tuple")
    return [r.split() for r in items]


def check_lengths(hypotheses: Sequence[str], references: Sequence) -> None:
    """One entry of references per hypothesis, and at least one hypothesis (BLEU shares it)."""
    if not hypotheses:
        raise ValueError("cannot score an empty set: got no hypotheses")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} reference entries; "
            "pass one tuple of acceptable references per hypothesis"
        )


def exact_match(hypotheses: Sequence[str], references: Sequence[RefSet]) -> float:
    """Percentage of hypotheses equal (token by token) to at least one of their references."""
    check_lengths(hypotheses, references)
    hits = sum(h.split() in _as_refs(refs) for h, refs in zip(hypotheses, references, strict=True))
    return 100.0 * hits / len(hypotheses)


def error_rates(hypotheses: Sequence[str], references: Sequence[RefSet]) -> dict[str, float]:
    """PER and WER in percent (see the module docstring) plus ``n``, the number of items.

    ``references[i]`` holds ALL acceptable references of item ``i`` (e.g. every CMUdict
    pronunciation of a word).
    """
    check_lengths(hypotheses, references)
    errors = length = wrong = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        tokens = hyp.split()
        # min over (distance, ref length): closest reference, ties to the shorter one.
        dist, ref_len = min((edit_distance(tokens, r), len(r)) for r in _as_refs(refs))
        errors += dist
        length += ref_len
        wrong += dist > 0
    if length == 0:
        raise ValueError("all closest references are empty, so PER is undefined")
    n = len(hypotheses)
    return {"per": 100.0 * errors / length, "wer": 100.0 * wrong / n, "n": n}


def char_error_rate(hypotheses: Sequence[str], references: Sequence[RefSet]) -> float:
    """CER in percent: character edit distance to the closest reference over its length.

    Whitespace runs count as one space and the ends are stripped, so spacing accidents cost
    at most one edit each. It is the natural error rate for any text output where a "word"
    is not the unit (G2P phones, transliteration, spelling).
    """
    check_lengths(hypotheses, references)
    errors = length = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        chars = " ".join(hyp.split())
        items = [refs] if isinstance(refs, str) else list(refs)
        dist, ref_len = min((edit_distance(chars, r), len(r))
                            for r in (" ".join(x.split()) for x in items))
        errors += dist
        length += ref_len
    if length == 0:
        raise ValueError("all closest references are empty, so CER is undefined")
    return 100.0 * errors / length
