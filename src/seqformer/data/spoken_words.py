"""``spoken-words``: English words from CMUdict spoken by espeak-ng voices, for speech -> spelling
(or, with ``target="phonemes"``, speech -> espeak-ng's own phonemes of the word in that voice).

A real sequence-to-sequence task: the model hears a word and writes its spelling letter by
letter, so it must learn English sound-to-spelling correspondences, not a closed label set, and
the test words are words it never heard. Homophones ("knight" / "night", "their" / "there")
cannot be told apart by ear; the reference is the one spelling that was spoken, so they count
as errors (:func:`homophones` counts how many test words have one).

Words: CMUdict entries of ``min_letters`` to ``max_letters`` plain letters (``data/g2p.py``
reads the dictionary), the ``max_words`` with the smallest hashes (a deterministic subset spread
over the alphabet), split by word with G2P's own hash split (``g2p.split_of``: about 90 / 5 / 5),
so no word is in two splits.

Voices: an English accent (``accents``) with an espeak-ng voice variant (``m1``..``m7``,
``f1``..``f5``). ``test_variants`` variants, and ``valid_variants`` more, are held out for
test / valid in every accent (``speech.split_variants``: a seeded, male/female-interleaved
shuffle), so the test set is unheard words spoken by unheard voices. Each word is said by
``voices_per_word`` voices of its split's pool, each at a speed and pitch from
``speech.SPEEDS`` x ``speech.PITCHES``, all drawn from a generator seeded by (``seed``, word):
the corpus is a pure function of the settings (and the espeak-ng version).

Synthesis, the WAV parsing of espeak-ng's streamed output, resampling to 16 kHz and the audio
cache are ``data/speech.py``'s (shared with the audio classifier); each waveform is then trimmed
to its loud span and peak-normalised (:func:`prepare`, which inference repeats).

Phoneme target: ``espeak-ng -q -x -v VOICE`` mnemonics (Kirshenbaum-like ASCII: ``h@l'oU``),
stress marks (``'`` primary, ``,`` secondary) kept -- they are espeak-ng's own deterministic
output and drive the pitch and length of the audio, so they are heard, not guessed; compound
boundaries (``-``) kept too. Tokenised one character per token like spellings (the mnemonics
are not delimited, and ``aI`` vs ``a`` + ``I`` is only a CER detail). Cached per voice.

User data: a TSV of ``path.wav<TAB>transcript`` lines (``speech.read_clip_list``; paths relative
to the TSV, line-numbered one-line errors).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from seqformer.data import speech
from seqformer.data.g2p import _lexicon, _word_hash, split_of
from seqformer.errors import DataError

CORPUS = "spoken-words"
SPLITS = ("train", "valid", "test")
TARGETS = ("spelling", "phonemes")
DEFAULT_ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029")
PEAK = 0.5


@dataclass
class SpokenSet:
    """Utterances: float32 16 kHz waveforms, their transcripts, where each came from (an
    utterance name or a WAV path) and who spoke it (an espeak-ng voice; "" for files)."""

    waveforms: list[np.ndarray]
    texts: list[str]
    sources: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def words(self) -> list[str]:
        """What each utterance says: the word of a synthesised one (its source is
        ``voice/word/rendition``, ``speech.Utterance.name``), else its text (a WAV of the
        user's)."""
        return [src.split("/")[1] if src.count("/") == 2 and not src.endswith(".wav") else text
                for src, text in zip(self.sources or [""] * len(self), self.texts)]

    def head(self, n: int) -> SpokenSet:
        return SpokenSet(self.waveforms[:n], self.texts[:n], self.sources[:n],
                         self.speakers[:n])

    def subset(self, indices: Sequence[int]) -> SpokenSet:
        def pick(items: list[Any]) -> list[Any]:
            return [items[i] for i in indices] if items else []

        return SpokenSet(pick(self.waveforms), pick(self.texts), pick(self.sources),
                         pick(self.speakers))


def prepare(samples: np.ndarray) -> np.ndarray:
    """The loud span of the waveform, at peak ``PEAK``: espeak-ng's leading and trailing silence
    would only add frames, and a fixed level keeps the log-mel's (x + 4) / 4 comparable."""
    word = speech.trim(np.asarray(samples, dtype=np.float32))
    return (word * (PEAK / max(float(np.abs(word).max()), 1e-9))).astype(np.float32)


def select_words(max_words: int, min_letters: int, max_letters: int) -> dict[str, list[str]]:
    """CMUdict words of plain letters, the ``max_words`` with the smallest hashes, by split."""
    if not 1 <= min_letters <= max_letters:
        raise DataError(f"data: need 1 <= min_letters ({min_letters}) <= max_letters "
                        f"({max_letters})")
    words = _ranked(min_letters, max_letters)[:max_words]
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for word in sorted(words):
        out[split_of(word)].append(word)
    for name in SPLITS:
        if not out[name]:
            raise DataError(f"data.max_words={max_words}: no {name} words; raise it")
    return out


@lru_cache(maxsize=4)
def _ranked(min_letters: int, max_letters: int) -> tuple[str, ...]:
    """CMUdict words of that many plain letters by hash (hashing them all takes a second)."""
    pattern = re.compile(rf"^[a-z]{{{min_letters},{max_letters}}}$")
    return tuple(sorted((w for w, _ in _lexicon() if pattern.match(w)), key=_word_hash))


def homophones(words: Sequence[str]) -> int:
    """How many of ``words`` share a CMUdict pronunciation with another CMUdict word: errors
    no listener could avoid (the reference is the spelling that was spoken)."""
    by_sound: dict[str, set[str]] = {}
    for word, prons in _lexicon():
        for pron in prons:
            by_sound.setdefault(pron.replace("0", "").replace("1", "").replace("2", ""),
                                set()).add(word)
    lexicon = dict(_lexicon())
    count = 0
    for word in words:
        sounds = [p.replace("0", "").replace("1", "").replace("2", "")
                  for p in lexicon.get(word, ())]
        count += any(len(by_sound.get(s, ())) > 1 for s in sounds)
    return count


def plan(words: dict[str, list[str]], accents: Sequence[str], variants: dict[str, list[str]],
         voices_per_word: int, seed: int) -> dict[str, list[speech.Utterance]]:
    """The utterances of every split: each word by ``voices_per_word`` distinct voices of its
    split (accent x held-out-or-not variant), with a speed and pitch; a pure function of its
    arguments."""
    out: dict[str, list[speech.Utterance]] = {}
    for name in SPLITS:
        voices = [f"{a}+{v}" for a in accents for v in variants[name]]
        if voices_per_word > len(voices):
            raise DataError(f"data.voices_per_word={voices_per_word} exceeds the {len(voices)} "
                            f"{name} voices ({len(accents)} accents x {len(variants[name])} "
                            "variants)")
        items = []
        for word in words[name]:
            rng = random.Random(f"seqformer.spoken-words:{seed}:{word}")
            for i, voice in enumerate(rng.sample(voices, voices_per_word)):
                items.append(speech.Utterance(word, voice, i, rng.choice(speech.SPEEDS),
                                              rng.choice(speech.PITCHES)))
        out[name] = items
    return out


def fingerprint(utterances: dict[str, list[speech.Utterance]]) -> str:
    """16 hex chars naming every (split, word, voice, speed, pitch), stored with a model."""
    content = {name: sorted(f"{u.word}|{u.voice}|{u.speed}|{u.pitch}" for u in items)
               for name, items in utterances.items()}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_spoken_words(max_words: int = 1500, min_letters: int = 3, max_letters: int = 10,
                      accents: Sequence[str] = DEFAULT_ACCENTS, voices_per_word: int = 3,
                      valid_variants: int = 2, test_variants: int = 2, seed: int = 0,
                      executable: str | None = None, log: Callable[[str], None] | None = None,
                      target: str = "spelling") -> tuple[dict[str, SpokenSet], str]:
    """The three splits (synthesised, or read from the cache) and their fingerprint.
    ``target``: ``spelling`` (the word) or ``phonemes`` (what espeak-ng says for the word in
    that voice, ``speech.phonemize_all``); the split and fingerprint do not depend on it.
    ``executable`` names the espeak-ng program (default ``$SEQFORMER_ESPEAK`` or espeak-ng on
    PATH); a missing one is a one-line DataError naming ``apt-get install espeak-ng``."""
    if target not in TARGETS:
        raise DataError(f"data.target={target!r}; use one of {', '.join(TARGETS)}")
    if not accents:
        raise DataError("data.accents: give at least one espeak-ng accent, e.g. en-us")
    words = select_words(max_words, min_letters, max_letters)
    variants = speech.split_variants(speech.VARIANTS, valid_variants, test_variants, seed)
    utterances = plan(words, list(accents), variants, voices_per_word, seed)
    flat = [u for name in SPLITS for u in utterances[name]]
    audio = iter(speech.synthesize_all(flat, executable, log))
    texts = iter(speech.phonemize_all([(u.word, u.voice) for u in flat], executable, log)
                 if target == "phonemes" else [u.word for u in flat])
    splits = {}
    for name in SPLITS:
        items = utterances[name]
        splits[name] = SpokenSet([prepare(next(audio)) for _ in items],
                                 [next(texts) for _ in items],
                                 [u.name for u in items], [u.voice for u in items])
    return splits, fingerprint(utterances)


def read_transcripts(path: str | Path, field_name: str = "--data") -> SpokenSet:
    """A TSV of ``path.wav<TAB>transcript`` lines as a :class:`SpokenSet` (prepared audio)."""
    if Path(path).is_dir():
        raise DataError(f"{field_name}: {path} is a directory; give a TSV of "
                        "'path.wav<TAB>transcript' lines")
    clips = speech.read_clip_list(path, field_name, "transcript")
    return SpokenSet([prepare(w) for w in clips.waveforms], list(clips.labels),
                     list(clips.sources), list(clips.speakers))


def read_transcript_splits(train: str, valid: str | None, test: str | None,
                           valid_fraction: float) -> tuple[dict[str, SpokenSet | None], str]:
    """``data.corpus: files`` of the speech tasks (speech to text, text to speech): the train /
    valid / test TSVs of ``path.wav<TAB>text`` (a missing valid is the last ``valid_fraction``
    of train -- the TSV's order is the user's, so the cut is deterministic; test may be None)
    and a fingerprint of their texts and paths."""
    train_set = read_transcripts(train, "data.train")
    if valid:
        valid_set = read_transcripts(valid, "data.valid")
    else:
        cut = max(1, int(round(len(train_set) * (1 - valid_fraction))))
        if cut >= len(train_set):
            raise DataError(f"data.train: {len(train_set)} utterance(s) leave none for "
                            "validation; give data.valid or more lines")
        valid_set = train_set.subset(range(cut, len(train_set)))
        train_set = train_set.head(cut)
    test_set = read_transcripts(test, "data.test") if test else None
    splits = {"train": train_set, "valid": valid_set, "test": test_set}
    content = {name: s.texts + s.sources for name, s in splits.items() if s is not None}
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return splits, fingerprint
