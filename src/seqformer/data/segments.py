"""Cutting a long recording into pieces a speech model can take, at its pauses.

A Whisper sees at most its window (30 s for the real one, a second or two for the word models
trained here), and a model trained on short utterances does best on short utterances. So a
long recording is split where it is quiet. Quiet is relative to the recording itself, so
that background noise does not read as speech: a 10 ms frame is a pause frame when its level
is within ``margin_db`` of the noise floor (the 10th percentile of frame levels) or
``range_db`` below the loud speech (the 95th percentile), whichever threshold is higher.
Runs of pause frames of at least ``min_silence`` seconds are pauses, each cut falls in the
middle of one, and a piece keeps ``padding`` seconds of its pauses around its sound. Pieces
with no loud frame are dropped. A piece still longer than the limit (no
pause long enough) is cut at its quietest frame in the second half of the allowed span, so
every piece fits. No model is involved: the cuts are reproducible and cheap.
"""

from __future__ import annotations

import numpy as np

FRAME = 160  # samples: 10 ms at 16 kHz, the log-mel hop


def _frame_levels(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS level of each ``frame``-sample frame in dB (digital silence: -200 dB)."""
    n = -(-len(samples) // frame)
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: len(samples)] = samples
    rms = np.sqrt(np.mean(padded.reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-10)


def split_at_pauses(samples: np.ndarray, max_samples: int | None = None,
                    sample_rate: int = 16000, min_silence: float = 0.3,
                    margin_db: float = 6.0, range_db: float = 40.0, padding: float = 0.1,
                    frame: int = FRAME) -> list[tuple[int, int]]:
    """``(start, end)`` sample spans of the speech in ``samples``, in order, each at most
    ``max_samples`` long (None: no limit), each from ``padding`` seconds before its first
    loud frame to as long after its last (within its pauses). A silent recording gives no
    spans; one with no level contrast (a steady tone, steady noise) is one span, cut only to
    fit."""
    samples = np.asarray(samples, dtype=np.float32)
    if max_samples is not None and max_samples < frame:
        raise ValueError(f"max_samples={max_samples} is shorter than one {frame}-sample frame")
    if not len(samples) or not np.abs(samples).max() > 0:
        return []
    levels = _frame_levels(samples, frame)
    floor, top = np.percentile(levels, 10), np.percentile(levels, 95)
    if top - floor < margin_db:  # nothing stands out: no pause can be told from speech
        loud = np.ones(len(levels), dtype=bool)
    else:
        loud = levels > max(floor + margin_db, top - range_db)
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
    pad = max(1, round(padding * sample_rate / frame))
    spans = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        inside = np.flatnonzero(loud[a:b])
        if not len(inside):
            continue
        # The sound and a little margin, not the whole pause: less noise for the model, and
        # timestamps that say when the speech is.
        first, last = max(a, a + inside[0] - pad), min(b, a + inside[-1] + 1 + pad)
        for s, e in _fit(first * frame, min(last * frame, len(samples)), levels, max_samples,
                         frame):
            if loud[s // frame: -(-e // frame)].any():  # a forced cut may leave a quiet end
                spans.append((s, e))
    return spans


def _fit(start: int, end: int, levels: np.ndarray, max_samples: int | None, frame: int
         ) -> list[tuple[int, int]]:
    """``[start, end)`` cut into pieces of at most ``max_samples``, each cut at the quietest
    frame boundary (the latest, among near-equals) in the second half of the span a piece may
    cover."""
    if max_samples is None:
        return [(start, end)]
    pieces = []
    while end - start > max_samples:
        lo = (start + max_samples // 2) // frame
        hi = max(lo + 1, (start + max_samples) // frame)
        window = levels[lo:hi + 1]  # boundary k sits at the start of frame k
        # the latest of the quietest frames (within 1 dB): pieces as long as allowed
        cut = (lo + int(np.flatnonzero(window <= window.min() + 1.0)[-1])) * frame
        if not start < cut <= start + max_samples:
            cut = start + max_samples
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces
