"""Corpus BLEU, chrF and TER, delegated to sacrebleu, with their signatures.

We never reimplement BLEU: scores are only comparable across papers when tokenisation,
smoothing and brevity penalty match the reference implementation exactly, so these wrappers
only adapt the data layout. seqformer keeps references *per sentence* (the natural shape when
a test example carries its own references), while sacrebleu wants reference *streams* (one
list per reference "slot", each as long as the corpus); `_ref_streams` transposes one into
the other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER

from seqformer.metrics.edit import check_lengths

References = Sequence[str] | Sequence[Sequence[str]]


def _ref_streams(hypotheses: Sequence[str], references: References) -> list[list[str | None]]:
    """Transpose per-sentence references into sacrebleu's reference streams.

    Sentences with fewer references than the maximum are padded with ``None``, which sacrebleu
    documents as "no reference in this slot" (it drops them per segment), so a varying number
    of references per sentence scores exactly as if each sentence had only its own.
    """
    check_lengths(hypotheses, references)
    per_sentence = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, refs in enumerate(per_sentence):
        if not refs:
            raise ValueError(f"hypothesis {i} has no reference")
    width = max(len(refs) for refs in per_sentence)
    return [
        [refs[k] if k < len(refs) else None for refs in per_sentence] for k in range(width)
    ]


def bleu(hypotheses: Sequence[str], references: References) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing), 0-100.

    ``references[i]`` is either the single reference of ``hypotheses[i]`` or a list of all
    its references.
    """
    streams = _ref_streams(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def chrf(hypotheses: Sequence[str], references: References) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100.

    Reported next to BLEU because it is far less noisy on small test sets and on
    morphologically rich targets such as Spanish.
    """
    streams = _ref_streams(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), streams).score)


def ter(hypotheses: Sequence[str], references: References) -> float:
    """Corpus TER (translation edit rate, sacrebleu defaults), 0-100+, lower is better: edits
    (including block shifts) per reference word, against the closest reference."""
    streams = _ref_streams(hypotheses, references)
    return float(TER().corpus_score(list(hypotheses), streams).score)


def signatures(hypotheses: Sequence[str], references: References) -> dict[str, str]:
    """sacrebleu's signature of each metric as computed here (``nrefs:1|case:mixed|...``).

    A score is only comparable to a published one with the same signature, so the CLI prints
    it next to the numbers.
    """
    streams = _ref_streams(hypotheses, references)
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
        metric.corpus_score(list(hypotheses), streams)
        out[name] = str(metric.get_signature())
    return out


# Signs of text that was tokenized before scoring: a space before final punctuation or a
# comma, split clitics ("don 't", "it 's"), Moses escapes.
_TOKENIZED = re.compile(r" [.,;:!?]( |$)| n't | '(s|re|ve|ll|d|m) |&(amp|quot|apos|lt|gt);")


def looks_tokenized(lines: Sequence[str]) -> bool:
    """True when most lines look tokenized (``"Hello , world ."``).

    sacrebleu tokenizes itself; scoring already-tokenized text tokenizes twice and gives
    numbers that match no published result, so callers warn about it.
    """
    lines = [line for line in lines if line.strip()]
    if not lines:
        return False
    return sum(bool(_TOKENIZED.search(line)) for line in lines) > 0.5 * len(lines)
