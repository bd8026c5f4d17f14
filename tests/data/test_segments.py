"""Splitting long recordings at pauses: where the cuts fall, the length limit, quiet input."""

from __future__ import annotations

import numpy as np
import pytest

from seqformer.data.segments import split_at_pauses

RATE = 16000


def tone(seconds: float, hz: float = 300.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def test_cuts_fall_in_the_pauses_and_each_span_holds_one_sound() -> None:
    parts = [silence(0.2), tone(0.5), silence(0.6), tone(0.3, 500), silence(0.4), tone(0.7, 700),
             silence(0.5)]
    wave = np.concatenate(parts)
    spans = split_at_pauses(wave, min_silence=0.3)
    assert len(spans) == 3
    sounds = [(0.2, 0.7), (1.3, 1.6), (2.0, 2.7)]  # seconds
    for (start, end), (a, b) in zip(spans, sounds, strict=True):
        assert start / RATE <= a + 0.011 and end / RATE >= b - 0.011  # the whole sound
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start  # in order, not overlapping
    # each span keeps 0.1 s of its pauses around the sound, no more
    for (start, end), (a, b) in zip(spans, sounds, strict=True):
        assert abs(start / RATE - (a - 0.1)) < 0.011 and abs(end / RATE - (b + 0.1)) < 0.011
    assert split_at_pauses(wave, min_silence=0.3, padding=0.25)[0][1] / RATE >= 0.94


def test_short_pauses_do_not_split() -> None:
    wave = np.concatenate([tone(0.5), silence(0.1), tone(0.5), silence(0.2), tone(0.3)])
    assert len(split_at_pauses(wave, min_silence=0.3)) == 1
    assert len(split_at_pauses(wave, min_silence=0.05)) == 3


def test_a_sound_longer_than_the_limit_is_cut_to_fit() -> None:
    # 5 s of sound with a dip (quiet but not silent long enough) every 0.5 s
    wave = np.concatenate([np.concatenate([tone(0.45), tone(0.05, level=0.005)])
                           for _ in range(10)])
    limit = RATE  # 1 s
    spans = split_at_pauses(wave, max_samples=limit, min_silence=0.3)
    assert all(end - start <= limit for start, end in spans)
    assert spans[0][0] == 0 and spans[-1][1] >= len(wave) - 160
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # nothing lost
    # cuts land on the quiet dips (every 0.5 s), not mid-tone
    for _, end in spans[:-1]:
        assert (end / RATE) % 0.5 >= 0.44 or (end / RATE) % 0.5 < 0.01


@pytest.mark.parametrize("snr_db", [30.0, 20.0, 10.0])
def test_pauses_are_found_under_background_noise(snr_db: float) -> None:
    """Pauses are quiet relative to the recording: steady noise must not read as speech."""
    rng = np.random.default_rng(0)
    wave = np.concatenate([silence(0.3), tone(0.5), silence(0.5), tone(0.4, 500), silence(0.5),
                           tone(0.6, 700), silence(0.3)])
    rms = 0.5 / np.sqrt(2)
    noisy = wave + rng.standard_normal(len(wave)).astype(np.float32) * rms * 10 ** (-snr_db / 20)
    spans = split_at_pauses(noisy, min_silence=0.3)
    assert len(spans) == 3
    for (start, end), (a, b) in zip(spans, [(0.3, 0.8), (1.3, 1.7), (2.2, 2.8)], strict=True):
        assert start / RATE <= a + 0.011 and end / RATE >= b - 0.011


def test_a_steady_sound_without_pauses_is_one_span() -> None:
    assert split_at_pauses(tone(2.0)) == [(0, 2 * RATE)]
    assert len(split_at_pauses(tone(2.0), max_samples=RATE)) == 2


def test_quiet_or_empty_input_gives_no_spans() -> None:
    assert split_at_pauses(silence(1.0)) == []
    assert split_at_pauses(np.zeros(0, dtype=np.float32)) == []
    with pytest.raises(ValueError):
        split_at_pauses(tone(1.0), max_samples=10)
