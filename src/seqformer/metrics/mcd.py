"""Mel cepstral distortion (MCD) between spectrograms of different lengths, aligned by dynamic
time warping: the usual objective score of a text-to-speech model.

A generated utterance is never frame-aligned with the recording it imitates (it may speak a
little faster or slower), so a frame-by-frame distance would mostly measure timing. DTW pairs
each generated frame with its best-matching reference frame along a monotonic path first;
MCD then averages the cepstral distance over that path:

    MCD = (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2)   dB, per aligned frame pair,

with c the mel cepstrum of the natural-log mel spectrum in the convention that formula assumes,
ln S(w) = c_0 + 2 sum_n c_n cos(n w) -- i.e. c_n = (1/M) sum_m ln S_m cos(pi n (m + 1/2) / M)
over the M mel bins, the orthonormal DCT-II divided by sqrt(2M) -- coefficients 1..13 (c_0, the
frame energy, is left out as is customary). The cepstra come from the model's log-mel
spectrogram rather than from SPTK's all-pass-warped mel-generalised cepstra of a vocoder
analysis, so figures compare between seqformer runs and are only roughly comparable with
published MCDs (same units and order of magnitude).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from seqformer.data.units import dct_matrix

MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


def mel_cepstrum(log_mel: Tensor, log_base: float = 10.0, n_coeffs: int = 13) -> Tensor:
    """Cepstral coefficients 1..``n_coeffs`` of each frame of a (frames, bins) log-mel
    spectrogram whose logarithm has base ``log_base``."""
    natural = log_mel.double() * math.log(log_base)
    bins = natural.shape[-1]
    dct = dct_matrix(n_coeffs + 1, bins).double() / math.sqrt(2.0 * bins)
    return (natural @ dct.T)[:, 1:]


def dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The monotonic alignment of least total cost through a (n, m) cost matrix, with steps
    (1, 0), (0, 1) and (1, 1), from (0, 0) to (n - 1, m - 1)."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        row, prev, here = cost[i - 1], total[i - 1], total[i]
        diagonal_or_up = np.minimum(prev[:-1], prev[1:])  # (i-1, j-1), (i-1, j) for j = 1..m
        for j in range(1, m + 1):
            here[j] = row[j - 1] + min(diagonal_or_up[j - 1], here[j - 1])
    path, i, j = [], n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        moves = ((total[i - 1, j - 1], i - 1, j - 1), (total[i - 1, j], i - 1, j),
                 (total[i, j - 1], i, j - 1))
        _, i, j = min(moves, key=lambda t: t[0])
    return path[::-1]


def mcd_dtw(generated: Tensor, reference: Tensor, log_base: float = 10.0,
            n_coeffs: int = 13) -> float:
    """MCD in dB between two (frames, bins) log-mel spectrograms after DTW alignment."""
    a = mel_cepstrum(generated, log_base, n_coeffs)
    b = mel_cepstrum(reference, log_base, n_coeffs)
    # Euclidean distance of every frame pair, exact (the matmul shortcut leaves ~1e-7 at 0).
    distance = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").numpy()
    path = dtw_path(distance)
    return float(MCD_SCALE * np.mean([distance[i, j] for i, j in path]))
