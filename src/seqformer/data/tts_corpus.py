"""``tts-words``: CMUdict words said by chosen espeak-ng voices, for text to speech.

The mirror image of ``spoken-words`` (``data/spoken_words.py``): there the model hears a word
and writes it; here it reads a word and must produce its spectrogram. The words and their
split are spoken-words' (CMUdict words of plain letters, the ``max_words`` with the smallest
hashes, split by G2P's word hash), so a TTS run and a speech-recognition run on the same
settings never share a test word -- the round trip (speak with one, transcribe with the other)
then measures words neither model saw.

Unlike speech recognition, a TTS model must *not* meet new voices at test time: it has no way
to guess how an unheard voice sounds. Every word is therefore said by every voice in
``voices`` (at espeak-ng's default speed and pitch, so the only variation a voice has is its
own), and a multi-voice model is told which voice to use (a one-hot speaker vector, saved with
the voice names).

The input text is the word's spelling (``input: spelling``: the model learns English
letter-to-sound rules too) or espeak-ng's phonemes of it in that voice (``input: phonemes``,
``speech.phonemize_all``: the usual TTS front end, as SpeechT5's phoneme-free character input
is the harder setting). Waveforms are trimmed and peak-normalised like spoken-words'
(``spoken_words.prepare``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from seqformer.data import speech
from seqformer.data.spoken_words import SPLITS, SpokenSet, prepare, select_words
from seqformer.errors import DataError

INPUTS = ("spelling", "phonemes")
DEFAULT_VOICE = "en-us+m3"


def plan(words: dict[str, list[str]], voices: Sequence[str]) -> dict[str, list[speech.Utterance]]:
    """Every word of a split by every voice, at espeak-ng's default speed and pitch."""
    return {name: [speech.Utterance(w, v, 0, 175, 50) for w in words[name] for v in voices]
            for name in SPLITS}


def fingerprint(utterances: dict[str, list[speech.Utterance]], input_kind: str) -> str:
    """16 hex chars naming every (split, word, voice) and the input kind."""
    content = {name: sorted(f"{u.word}|{u.voice}" for u in items)
               for name, items in utterances.items()}
    blob = json.dumps([input_kind, content], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def input_texts(words: Sequence[str], voices: Sequence[str], input_kind: str,
                executable: str | None = None, log: Callable[[str], None] | None = None
                ) -> list[str]:
    """The model input of each (word, voice): the spelling, or espeak-ng's phonemes of the word
    in that voice (inference repeats this for the user's text)."""
    if input_kind not in INPUTS:
        raise DataError(f"data.input={input_kind!r}; use one of {', '.join(INPUTS)}")
    if input_kind == "spelling":
        return [w.lower() for w in words]
    return speech.phonemize_all(list(zip(words, voices)), executable, log)


def load_tts_words(max_words: int = 3000, min_letters: int = 3, max_letters: int = 10,
                   voices: Sequence[str] = (DEFAULT_VOICE,), input_kind: str = "phonemes",
                   executable: str | None = None, log: Callable[[str], None] | None = None
                   ) -> tuple[dict[str, SpokenSet], str]:
    """The three splits (synthesised, or read from the audio cache) and their fingerprint.
    Each :class:`SpokenSet` holds the waveform, the input text (``texts``), the utterance name
    (``sources``: ``voice/word/0``) and the voice (``speakers``)."""
    if not voices:
        raise DataError("data.voices: give at least one espeak-ng voice, e.g. en-us+m3")
    if len(set(voices)) != len(voices):
        raise DataError(f"data.voices: {list(voices)} repeats a voice; list each once")
    if input_kind not in INPUTS:
        raise DataError(f"data.input={input_kind!r}; use one of {', '.join(INPUTS)}")
    words = select_words(max_words, min_letters, max_letters)
    utterances = plan(words, voices)
    flat = [u for name in SPLITS for u in utterances[name]]
    audio = iter(speech.synthesize_all(flat, executable, log))
    texts = iter(input_texts([u.word for u in flat], [u.voice for u in flat], input_kind,
                             executable, log))
    splits = {}
    for name in SPLITS:
        items = utterances[name]
        splits[name] = SpokenSet([prepare(next(audio)) for _ in items],
                                 [next(texts) for _ in items],
                                 [u.name for u in items], [u.voice for u in items])
    return splits, fingerprint(utterances, input_kind)
