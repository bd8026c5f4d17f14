"""MCD with DTW: zero for the same spectrogram however it is stretched in time, the DTW cost
equal to a brute-force recursion, and the dB scale of the textbook formula."""

import math
from functools import cache

import numpy as np
import torch

from seqformer.metrics.mcd import MCD_SCALE, dtw_path, mcd_dtw, mel_cepstrum


def brute_force_dtw(cost: np.ndarray) -> float:
    n, m = cost.shape

    @cache
    def best(i: int, j: int) -> float:
        if i == 0 and j == 0:
            return float(cost[0, 0])
        options = []
        if i > 0:
            options.append(best(i - 1, j))
        if j > 0:
            options.append(best(i, j - 1))
        if i > 0 and j > 0:
            options.append(best(i - 1, j - 1))
        return float(cost[i, j]) + min(options)

    return best(n - 1, m - 1)


def test_dtw_path_has_the_least_cost_of_any_monotonic_alignment():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 5), (4, 1), (5, 7), (9, 6)]:
        cost = rng.random((n, m))
        path = dtw_path(cost)
        assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
        for (a, b), (c, d) in zip(path, path[1:]):  # monotonic unit steps
            assert (c - a, d - b) in {(1, 0), (0, 1), (1, 1)}
        assert math.isclose(sum(cost[i, j] for i, j in path), brute_force_dtw(cost),
                            rel_tol=1e-12)


def test_mcd_is_zero_for_the_same_speech_said_slower_and_positive_otherwise():
    torch.manual_seed(0)
    reference = torch.randn(30, 80)
    slower = reference.repeat_interleave(2, dim=0)  # every frame held twice
    assert mcd_dtw(slower, reference) < 1e-9  # rounding of the cepstra only
    assert mcd_dtw(reference, reference) < 1e-9
    assert mcd_dtw(reference + 0.1 * torch.randn(30, 80), reference) > 0.1


def test_mcd_uses_the_textbook_db_scale_on_natural_log_cepstra():
    # One frame each: MCD = 10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2) over c_1..c_13, with
    # c_n = (1/M) sum_m ln S_m cos(pi n (m + 1/2) / M), written out here without dct_matrix.
    torch.manual_seed(1)
    a, b = torch.randn(1, 40), torch.randn(1, 40)
    m = torch.arange(40, dtype=torch.float64)
    basis = torch.stack([torch.cos(math.pi * n * (m + 0.5) / 40) for n in range(14)]) / 40
    ca = (a.double() * math.log(10.0)) @ basis.T
    cb = (b.double() * math.log(10.0)) @ basis.T
    expected = 10 / math.log(10) * math.sqrt(2 * float(((ca - cb)[0, 1:] ** 2).sum()))
    assert math.isclose(mcd_dtw(a, b), expected, rel_tol=1e-9)
    assert math.isclose(MCD_SCALE, 10 / math.log(10) * math.sqrt(2))
    assert mel_cepstrum(a).shape == (1, 13)
