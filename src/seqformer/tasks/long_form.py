"""Long recordings through a speech model that takes short ones: split at pauses, transcribe
the pieces in one batch, join them, and keep each piece's time span (timestamps).

Works with either transcriber (``tasks.speech.Transcriber``, ``tasks.speech_ctc.
CTCTranscriber``) through its public ``transcribe``: each piece is handed over as a raw
waveform and gets exactly the treatment a short recording gets (trimmed and levelled for our
runs, as read for imported checkpoints). A recording that fits the model is not split unless
asked (``segment=True``), so its transcript is the one ``transcribe`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqformer.data import speech
from seqformer.data.segments import split_at_pauses


@dataclass(frozen=True)
class Segment:
    """One transcribed piece: seconds from the start of its recording, and its text."""

    start: float
    end: float
    text: str


def _waveform(item: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(item, str | Path):
        return speech.read_wav(item)
    return np.asarray(item, dtype=np.float32)


def transcribe_segments(transcriber: Any, audio: Sequence[str | Path | np.ndarray],
                        segment: bool = False, min_silence: float = 0.3,
                        **decode: Any) -> list[list[Segment]]:
    """The pieces of each recording (WAV path or 16 kHz waveform) with their transcripts.

    A recording longer than the model takes (``transcriber.max_samples``; a trained run
    measures its trimmed span, which is what the model would see) is split at pauses of at
    least ``min_silence`` seconds, and a stretch with no such pause at its quietest point;
    ``segment=True`` splits every recording at its pauses. ``decode`` goes to ``transcribe``
    (beam, alpha, ...).
    """
    limit = getattr(transcriber, "max_samples", None)
    waves = [_waveform(item) for item in audio]
    spans: list[list[tuple[int, int]]] = []
    for wave in waves:
        seen = speech.trim(wave) if transcriber.levels_input else wave
        if segment or (limit is not None and len(seen) > limit):
            spans.append(split_at_pauses(wave, limit, speech.SAMPLE_RATE, min_silence))
        else:
            spans.append([(0, len(wave))])
    pieces = [wave[s:e] for wave, row in zip(waves, spans, strict=True) for s, e in row]
    texts = iter(transcriber.transcribe(pieces, **decode) if pieces else [])
    rate = float(speech.SAMPLE_RATE)
    return [[Segment(s / rate, e / rate, next(texts)) for s, e in row] for row in spans]


def joined(pieces: Sequence[Segment]) -> str:
    """One recording's transcript: its pieces' texts, the empty ones left out."""
    return " ".join(piece.text for piece in pieces if piece.text)


def transcribe_long(transcriber: Any, audio: Sequence[str | Path | np.ndarray],
                    segment: bool = False, min_silence: float = 0.3, **decode: Any
                    ) -> list[str]:
    """The transcript of each recording: its pieces' texts joined by spaces."""
    return [joined(row)
            for row in transcribe_segments(transcriber, audio, segment, min_silence, **decode)]
