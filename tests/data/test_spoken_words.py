"""The spoken-words corpus: a split disjoint by word and by voice, deterministic, and espeak-ng
errors and user TSVs reported on one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from seqformer.data import speech, spoken_words
from seqformer.errors import DataError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")


def make_plan(seed: int = 0) -> dict[str, list[speech.Utterance]]:
    words = spoken_words.select_words(400, 3, 10)
    variants = speech.split_variants(speech.VARIANTS, 2, 2, seed)
    return spoken_words.plan(words, ["en", "en-us", "en-029"], variants, 3, seed)


def test_split_is_disjoint_by_word_and_voice_and_deterministic() -> None:
    plan = make_plan()
    assert plan == make_plan()  # a pure function of the settings
    words = {name: {u.word for u in items} for name, items in plan.items()}
    variants = {name: {u.variant for u in items} for name, items in plan.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not words[a] & words[b], (a, b)
        assert not variants[a] & variants[b], (a, b)
    assert len(variants["test"]) == 2 and len(variants["train"]) == 8
    assert all(len([u for u in plan["test"] if u.word == w]) == 3 for w in words["test"])
    fingerprint = spoken_words.fingerprint(plan)
    assert fingerprint == spoken_words.fingerprint(make_plan())
    assert fingerprint != spoken_words.fingerprint(make_plan(seed=1))


def test_words_follow_the_g2p_split_and_length_limits() -> None:
    from seqformer.data.g2p import split_of

    words = spoken_words.select_words(300, 4, 6)
    assert sum(len(v) for v in words.values()) == 300
    for name, items in words.items():
        assert all(split_of(w) == name and 4 <= len(w) <= 6 and w.isalpha() for w in items)
    assert spoken_words.homophones(["night", "knight"]) == 2
    assert spoken_words.homophones(["photosynthesis"]) == 0


def test_missing_espeak_is_a_one_line_error_naming_the_package(monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_ESPEAK", "/nonexistent/espeak-ng")
    with pytest.raises(DataError, match="apt-get install espeak-ng") as info:
        spoken_words.load_spoken_words(max_words=120, accents=["en-us"], voices_per_word=1)
    assert "\n" not in str(info.value)


@needs_espeak
def test_synthesised_splits_are_cached_audio(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path))
    splits, fp = spoken_words.load_spoken_words(max_words=120, accents=["en-us"],
                                                voices_per_word=1)
    assert sum(len(s) for s in splits.values()) == 120 and len(fp) == 16
    wave = splits["train"].waveforms[0]
    assert wave.dtype == np.float32 and 1600 < len(wave) < 32000  # 0.1-2 s of 16 kHz audio
    assert float(np.abs(wave).max()) == pytest.approx(spoken_words.PEAK, rel=1e-3)
    again, fp2 = spoken_words.load_spoken_words(max_words=120, accents=["en-us"],
                                                voices_per_word=1)
    assert fp2 == fp and np.array_equal(again["train"].waveforms[0], wave)


def test_transcript_tsv_reads_wavs_and_reports_bad_lines(tmp_path: Path) -> None:
    t = np.arange(8000) / 16000
    speech.write_wav(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 300 * t))
    good = tmp_path / "good.tsv"
    good.write_text("a.wav\thello there\n\n", encoding="utf-8")
    data = spoken_words.read_transcripts(good)
    assert data.texts == ["hello there"] and len(data.waveforms[0]) <= 8000
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.wav\thello\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected"):
        spoken_words.read_transcripts(bad)
    missing = tmp_path / "missing.tsv"
    missing.write_text("nowhere.wav\thello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing.tsv:1: .*no such WAV file"):
        spoken_words.read_transcripts(missing)


def test_bad_target_is_a_one_line_error() -> None:
    with pytest.raises(DataError, match=r"data.target='ipa'; use one of spelling, phonemes") \
            as info:
        spoken_words.load_spoken_words(max_words=120, accents=["en-us"], target="ipa")
    assert "\n" not in str(info.value)


@needs_espeak
def test_phoneme_target_is_what_espeak_says_cached_and_keeps_the_split(
        tmp_path: Path, monkeypatch) -> None:
    import subprocess

    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "espeak-wrapper"  # runs espeak-ng and logs every call's arguments
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("espeak-ng")} '
                       '"$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    monkeypatch.setenv("SEQFORMER_ESPEAK", str(wrapper))
    settings = dict(max_words=120, accents=["en-us", "en-gb-scotland"], voices_per_word=2)
    phon, fp = spoken_words.load_spoken_words(**settings, target="phonemes")
    assert "-x" in calls.read_text()
    spelled, fp_spelled = spoken_words.load_spoken_words(**settings)
    assert fp == fp_spelled  # the same words and voices in every split
    for name in spoken_words.SPLITS:
        assert phon[name].sources == spelled[name].sources
        assert phon[name].speakers == spelled[name].speakers
        assert phon[name].texts != spelled[name].texts
        for i in (0, len(phon[name]) - 1):  # what espeak-ng prints for that word and voice
            word = spelled[name].texts[i]
            said = subprocess.run(["espeak-ng", "-q", "-x", "-v", phon[name].speakers[i], word],
                                  capture_output=True, text=True, check=True).stdout.strip()
            assert phon[name].texts[i] == said, (word, phon[name].speakers[i])
    assert any("'" in t for t in phon["train"].texts)  # stress marks kept
    calls.write_text("", encoding="utf-8")
    again, _ = spoken_words.load_spoken_words(**settings, target="phonemes")
    assert all(again[n].texts == phon[n].texts for n in spoken_words.SPLITS)  # deterministic
    assert "-x" not in calls.read_text()  # from the cache: espeak-ng was not asked again


@needs_espeak
def test_phonemes_of_a_batch_equal_one_call_per_word() -> None:
    program = shutil.which("espeak-ng")
    words = ["hello", "knight", "read", "photosynthesis", "worcester"]
    batch = speech.phonemes(words, "en-gb-scotland+f2", program)
    import subprocess

    alone = [subprocess.run([program, "-q", "-x", "-v", "en-gb-scotland+f2", w],
                            capture_output=True, text=True, check=True).stdout.strip()
             for w in words]
    assert batch == alone and batch[0] == "h@l'oU"
