"""tts-words: every word by every voice, the split of spoken-words, inputs as spelling or
espeak-ng phonemes, and a fingerprint that names the input kind."""

import pytest

from seqformer.data.spoken_words import select_words
from seqformer.data.tts_corpus import load_tts_words
from seqformer.errors import DataError


def test_every_word_by_every_voice_with_spoken_words_split():
    voices = ["en-us+m3", "en+f2"]
    splits, fp = load_tts_words(max_words=120, voices=voices, input_kind="spelling")
    words = select_words(120, 3, 10)
    for name, data in splits.items():
        assert len(data) == len(words[name]) * 2
        assert sorted(set(data.texts)) == sorted(words[name])
        assert set(data.speakers) == set(voices)
        assert all(w.dtype.name == "float32" and len(w) > 1000 for w in data.waveforms)
    again, fp2 = load_tts_words(max_words=120, voices=voices, input_kind="spelling")
    assert fp == fp2 and again["test"].texts == splits["test"].texts
    phon, fp3 = load_tts_words(max_words=120, voices=voices, input_kind="phonemes")
    assert fp3 != fp  # the input kind is part of what a run was trained on
    assert phon["train"].sources == splits["train"].sources
    assert phon["train"].texts != splits["train"].texts
    assert any("'" in t for t in phon["train"].texts)  # espeak-ng stress marks


def test_bad_voice_lists_are_refused():
    with pytest.raises(DataError, match="at least one"):
        load_tts_words(max_words=120, voices=[])
    with pytest.raises(DataError, match="repeats"):
        load_tts_words(max_words=120, voices=["en-us+m3", "en-us+m3"])
    with pytest.raises(DataError, match="data.input"):
        load_tts_words(max_words=120, input_kind="ipa")
