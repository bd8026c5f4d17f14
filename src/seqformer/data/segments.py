"""Cutting a long recording into pieces a speech model can take, at its pauses.

A Whisper sees at most its window (30 s for the real one, a second or two for the word models
trained here), and a model trained on short utterances does best on short utterances. So a
long recording is split where it is quiet: frames of 10 ms whose peak stays below
``threshold`` of the recording's peak (the rule ``speech.trim`` uses to find a word's loud
span), in runs of at least ``min_silence`` seconds, are pauses, and each cut falls in the
middle of one. Pieces with no loud frame are dropped. A piece still longer than the limit (no
pause long enough) is cut at its quietest frame in the second half of the allowed span, so
every piece fits. No model is involved: the cuts are reproducible and cheap.
"""

from __future__ import annotations

import numpy as np

FRAME = 160  # samples: 10 ms at 16 kHz, the log-mel hop


def _frame_peaks(samples: np.ndarray, frame: int) -> np.ndarray:
    """Peak magnitude of each ``frame``-sample frame (the last one may be short)."""
    n = -(-len(samples) // frame)
    padded = np.zeros(n * frame, dtype=np.float32)
    padded[: len(samples)] = np.abs(samples)
    return padded.reshape(n, frame).max(axis=1)


def split_at_pauses(samples: np.ndarray, max_samples: int | None = None,
                    sample_rate: int = 16000, min_silence: float = 0.3,
                    threshold: float = 0.02, frame: int = FRAME) -> list[tuple[int, int]]:
    """``(start, end)`` sample spans of the speech in ``samples``, in order, each at most
    ``max_samples`` long (None: no limit). An all-quiet recording gives no spans."""
    samples = np.asarray(samples, dtype=np.float32)
    if max_samples is not None and max_samples < frame:
        raise ValueError(f"max_samples={max_samples} is shorter than one {frame}-sample frame")
    if not len(samples):
        return []
    peaks = _frame_peaks(samples, frame)
    loud = peaks > threshold * max(float(peaks.max()), 1e-9)
    if not loud.any():
        return []
    # Cut points (in frames): the middle of every quiet run of at least min_silence that lies
    # between loud frames.
    min_frames = max(1, round(min_silence * sample_rate / frame))
    cuts = [0]
    run_start = None
    for i, is_loud in enumerate(loud):
        if not is_loud and run_start is None:
            run_start = i
        elif is_loud and run_start is not None:
            if i - run_start >= min_frames and run_start > 0:
                cuts.append((run_start + i) // 2)
            run_start = None
    cuts.append(len(loud))
    spans = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if loud[a:b].any():
            for s, e in _fit(a * frame, min(b * frame, len(samples)), peaks, max_samples,
                             frame):
                if loud[s // frame: -(-e // frame)].any():  # a forced cut may leave a quiet end
                    spans.append((s, e))
    return spans


def _fit(start: int, end: int, peaks: np.ndarray, max_samples: int | None, frame: int
         ) -> list[tuple[int, int]]:
    """``[start, end)`` cut into pieces of at most ``max_samples``, each cut at the quietest
    frame boundary in the second half of the span a piece may cover."""
    if max_samples is None:
        return [(start, end)]
    pieces = []
    while end - start > max_samples:
        lo = (start + max_samples // 2) // frame
        hi = max(lo + 1, (start + max_samples) // frame)
        cut = (lo + int(np.argmin(peaks[lo:hi]))) * frame
        if cut <= start:
            cut = start + max_samples
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces
