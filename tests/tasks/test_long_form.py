"""Long-form transcription: pieces found at pauses, transcribed once each, put back in order."""

from __future__ import annotations

import numpy as np

from seqformer.data import speech
from seqformer.tasks.long_form import transcribe_long, transcribe_segments

RATE = speech.SAMPLE_RATE


class PitchTranscriber:
    """Names the dominant frequency of each waveform it is given (after trimming, as a run
    that levels its input would): a transcriber whose output tells pieces apart."""

    levels_input = True

    def __init__(self, max_seconds: float | None) -> None:
        self.max_samples = None if max_seconds is None else int(max_seconds * RATE)
        self.calls: list[int] = []

    def transcribe(self, audio, beam=None, **_):
        self.calls.append(len(audio))
        out = []
        for wave in audio:
            wave = speech.trim(np.asarray(wave, dtype=np.float32))
            assert self.max_samples is None or len(wave) <= self.max_samples
            spectrum = np.abs(np.fft.rfft(wave, n=RATE))
            out.append(f"f{int(np.argmax(spectrum[1:])) + 1}")
        return out


def tone(hz: int, seconds: float = 0.4) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(
        np.float32)


def recording(freqs: list[int], gap: float = 0.5) -> np.ndarray:
    pause = np.zeros(int(gap * RATE), dtype=np.float32)
    return np.concatenate([x for f in freqs for x in (pause, tone(f))] + [pause])


def test_a_long_recording_is_split_at_its_pauses_and_put_back_in_order() -> None:
    freqs = [200, 330, 470, 610, 800]
    fake = PitchTranscriber(max_seconds=1.5)
    long = recording(freqs)  # 4.5 s > 1.5 s
    assert transcribe_long(fake, [long]) == [" ".join(f"f{f}" for f in freqs)]
    pieces = transcribe_segments(fake, [long])[0]
    for i, piece in enumerate(pieces):
        sound_start = 0.5 + 0.9 * i
        assert piece.start <= sound_start and sound_start + 0.4 <= piece.end
        assert piece.end - piece.start <= 1.5
    assert fake.calls[-1] == len(freqs)  # every piece in one batch


def test_recordings_that_fit_stay_whole_unless_asked() -> None:
    fake = PitchTranscriber(max_seconds=3.0)
    short = recording([200, 470])  # 2.3 s: fits, so transcribed whole (one loudest pitch)
    whole = transcribe_segments(fake, [short])[0]
    assert len(whole) == 1 and whole[0].start == 0.0 and whole[0].end == len(short) / RATE
    split = transcribe_segments(fake, [short], segment=True)[0]
    assert [p.text for p in split] == ["f200", "f470"]


def test_several_recordings_keep_their_own_pieces() -> None:
    fake = PitchTranscriber(max_seconds=1.0)
    a, b, c = recording([250, 650, 900]), tone(400), recording([300, 700])
    assert transcribe_long(fake, [a, b, c]) == ["f250 f650 f900", "f400", "f300 f700"]
    assert fake.calls == [6]


def test_a_model_without_a_window_splits_only_when_asked() -> None:
    fake = PitchTranscriber(max_seconds=None)  # a CTC model: any length
    long = recording([200, 330, 470, 610])
    assert len(transcribe_segments(fake, [long])[0]) == 1
    assert transcribe_long(fake, [long], segment=True) == ["f200 f330 f470 f610"]


def test_silence_gives_an_empty_transcript() -> None:
    fake = PitchTranscriber(max_seconds=1.0)
    quiet = np.zeros(3 * RATE, dtype=np.float32)
    assert transcribe_segments(fake, [quiet]) == [[]]
    assert transcribe_long(fake, [quiet]) == [""]
