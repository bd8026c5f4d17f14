"""The espeak-ng speech-commands corpus (synthesis, the streamed-WAV header, the split by voice
variant, determinism, the cache) and the user's WAV / TSV input with its one-line errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from seqformer.data import speech
from seqformer.errors import DataError

needs_espeak = pytest.mark.skipif(
    __import__("shutil").which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); CI installs it")

TINY = dict(words=("yes", "no"), accents=("en", "en-us"),
            variants=("m1", "m2", "m3", "f1", "f2"), valid_variants=1, test_variants=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """One synthesis cache for this module, never the user's ~/.cache."""
    root = tmp_path_factory.getbasetemp() / "speech-cache"
    monkeypatch.setenv("SEQFORMER_CACHE", str(root))
    monkeypatch.delenv(speech.ESPEAK_ENV, raising=False)
    return root


def test_split_variants_is_disjoint_seeded_and_mixes_male_and_female() -> None:
    a = speech.split_variants(speech.VARIANTS, 2, 2, 0)
    assert a == speech.split_variants(speech.VARIANTS, 2, 2, 0)
    assert sorted(a["train"] + a["valid"] + a["test"]) == sorted(speech.VARIANTS)
    assert not set(a["train"]) & set(a["test"]) and not set(a["valid"]) & set(a["test"])
    for held in (a["valid"], a["test"]):
        assert sorted(v[0] for v in held) == ["f", "m"]
    seeds = {tuple(speech.split_variants(speech.VARIANTS, 2, 2, s)["test"]) for s in range(6)}
    assert len(seeds) > 1
    with pytest.raises(DataError, match="cannot hold out"):
        speech.split_variants(("m1", "f1"), 1, 1, 0)


def test_streamed_wav_header_with_a_bogus_length_is_read_to_the_end() -> None:
    samples = (np.arange(10, dtype=np.int16) - 5) * 100
    header = (b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVE" + b"fmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
              + b"data" + struct.pack("<I", 0x7FFFF000))  # 1073739776 frames, as espeak-ng
    got, rate = speech.parse_wav_bytes(header + samples.tobytes(), "stdout")
    assert rate == 22050 and np.array_equal(got, samples)
    with pytest.raises(DataError, match="not a RIFF/WAVE"):
        speech.parse_wav_bytes(b"nonsense" * 8, "stdout")


def test_resample_keeps_a_tone_and_the_duration() -> None:
    t = np.arange(22050) / 22050
    out = speech.resample(np.sin(2 * np.pi * 440 * t), 22050, 16000)
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 0.01


@needs_espeak
def test_espeak_synthesis_gives_a_short_loud_16k_word() -> None:
    audio = speech.synthesize("yes", "en-us+f2", 170, 50)
    assert audio.dtype == np.float32 and 0.2 < len(audio) / 16000 < 2.0
    assert 0.05 < np.abs(audio).max() <= 1.0
    assert 0.15 < len(speech.trim(audio)) / 16000 < 1.0
    with pytest.raises(DataError, match="no audio"):
        speech.synthesize("yes", "bogus")
    # With a variant, espeak-ng would fall back to a default voice: checked up front instead.
    with pytest.raises(DataError, match="no voice language 'en-xx'"):
        speech.speech_commands_splits(**{**TINY, "accents": ("en", "en-xx")})
    with pytest.raises(DataError, match="no voice variant 'q9'"):
        speech.speech_commands_splits(**{**TINY, "variants": ("m1", "m2", "q9", "f1", "f2")})


@needs_espeak
def test_corpus_is_split_by_voice_deterministic_and_cached(private_cache: Path) -> None:
    a = speech.speech_commands_splits(**TINY)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [12, 4, 4]  # 2 words x 2 accents
    variants = {k: {v.rsplit("+", 1)[1] for v in a[k].speakers} for k in a}
    assert not variants["train"] & variants["test"] and not variants["valid"] & variants["test"]
    assert set(a["test"].labels) == {"yes", "no"}
    assert all(len(w) == 16000 for w in a["train"].waveforms)
    assert len(list(private_cache.rglob("*.npy"))) == 20
    b = speech.speech_commands_splits(**TINY)  # from the cache now
    assert a["test"].sources == b["test"].sources
    assert all(np.array_equal(x, y) for x, y in zip(a["test"].waveforms, b["test"].waveforms))
    c = speech.speech_commands_splits(**TINY, seed=1)  # other noise and shifts, same split
    assert c["test"].sources == a["test"].sources
    assert not np.array_equal(c["test"].waveforms[0], a["test"].waveforms[0])


def test_missing_espeak_is_one_line_naming_the_package(monkeypatch) -> None:
    monkeypatch.setenv(speech.ESPEAK_ENV, "/nonexistent/espeak-ng")
    with pytest.raises(DataError) as info:
        speech.speech_commands_splits(**TINY)
    message = str(info.value)
    assert "apt-get install espeak-ng" in message and "/nonexistent/espeak-ng" in message
    assert "\n" not in message
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        speech.find_espeak("/nonexistent/espeak-ng")


def test_clip_list_reads_tsv_and_directories(tmp_path: Path) -> None:
    tone = 0.5 * np.sin(np.arange(8000) * 0.1)
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    speech.write_wav(tmp_path / "yes" / "a.wav", tone)
    speech.write_wav(tmp_path / "no" / "b.wav", tone, rate=8000)  # resampled to 16 kHz
    by_dir = speech.read_clip_list(tmp_path)
    assert by_dir.labels == ["no", "yes"] and len(by_dir.waveforms[0]) == 16000
    tsv = tmp_path / "list.tsv"
    tsv.write_text("yes/a.wav\tyes\n\nno/b.wav\tno\n")
    by_tsv = speech.read_clip_list(tsv)
    assert by_tsv.labels == ["yes", "no"]
    np.testing.assert_allclose(by_tsv.waveforms[0], tone, atol=1e-4)


@pytest.mark.parametrize("content,message", [
    ("yes/a.wav\tyes\nmissing.wav\tno\n", r"list.tsv:2: .*missing.wav: no such WAV file"),
    ("yes/a.wav\tyes\njust-a-path.wav\n", r"list.tsv:2: expected 'path.wav<TAB>label'"),
    ("yes/a.wav\tyes\nbad.wav\tno\n", r"list.tsv:2: .*bad.wav: not a readable WAV file"),
    ("yes/a.wav\tyes\nbyte.wav\tno\n", r"list.tsv:2: .*byte.wav: 8-bit samples"),
    ("\n\n", r"list.tsv: no clips"),
])
def test_clip_list_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "yes").mkdir()
    speech.write_wav(tmp_path / "yes" / "a.wav", np.zeros(1600))
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    import wave

    with wave.open(str(tmp_path / "byte.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(16000)
        w.writeframes(bytes(100))
    (tmp_path / "list.tsv").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        speech.read_clip_list(tmp_path / "list.tsv")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no such file or directory"):
        speech.read_clip_list(tmp_path / "absent.tsv")
