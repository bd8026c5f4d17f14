"""MFCC frames against transformers' audio_utils and scipy; k-means against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqformer.data.units import (
    KMeans,
    dct_matrix,
    fit_mean_std,
    log_mel_frames,
    mfcc_frames,
    regression_deltas,
)
from seqformer.errors import CheckpointError, ConfigError, DataError


def speechlike(samples: int, seed: int) -> np.ndarray:
    """Harmonics of a gliding pitch under an envelope, plus noise: energy in every band."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    phase = 2 * np.pi * np.cumsum(110 + 90 * t / max(t[-1], 1e-9)) / 16000
    wave = sum(np.sin(k * phase) / k for k in range(1, 20)) * np.exp(-((t - t.mean()) ** 2) / 0.1)
    return (0.3 * wave / np.abs(wave).max() + 1e-3 * rng.standard_normal(samples)
            ).astype(np.float32)


def hf_log_mel(wave: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """(frames, n_mels) with transformers' spectrogram on the same settings."""
    audio_utils = pytest.importorskip("transformers.audio_utils")
    bank = audio_utils.mel_filter_bank(257, n_mels, 20.0, 8000.0, 16000, norm=None,
                                       mel_scale="kaldi", triangularize_in_mel_space=True)
    return audio_utils.spectrogram(
        wave.astype(np.float64), audio_utils.window_function(400, "hann", periodic=True),
        frame_length=400, hop_length=320, fft_length=512, power=2.0, center=False,
        mel_filters=bank, mel_floor=float(np.finfo(np.float32).eps), log_mel="log",
        dtype=np.float64).T


@pytest.mark.parametrize("samples,n_mels", [(16000, 40), (720, 40), (7777, 23), (400, 40)])
def test_log_mel_matches_transformers_spectrogram(samples: int, n_mels: int) -> None:
    wave = speechlike(samples, samples)
    expected = hf_log_mel(wave, n_mels)
    got = log_mel_frames(wave, n_mels=n_mels)
    assert got.shape == expected.shape == (1 + (samples - 400) // 320, n_mels)
    assert float(np.abs(got.numpy() - expected).max()) < 1e-6


def test_dct_matrix_is_scipys_orthonormal_dct_ii() -> None:
    scipy_fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(0).standard_normal((7, 40))
    expected = scipy_fft.dct(x, type=2, norm="ortho", axis=1)[:, :13]
    got = torch.from_numpy(x) @ dct_matrix(13, 40).T
    assert float(np.abs(got.numpy() - expected).max()) < 1e-12
    full = dct_matrix(40, 40)
    assert torch.allclose(full @ full.T, torch.eye(40, dtype=torch.float64), atol=1e-12)


def test_mfcc_is_the_dct_of_the_reference_log_mel() -> None:
    scipy_fft = pytest.importorskip("scipy.fft")
    wave = speechlike(12345, 1)
    expected = scipy_fft.dct(hf_log_mel(wave), norm="ortho", axis=1)[:, :13]
    got = mfcc_frames(wave, deltas=False)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert float(np.abs(got.numpy() - expected).max()) < 1e-4  # float32 output of ~|20|


def test_deltas_follow_the_htk_regression_formula() -> None:
    c = torch.randn(9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.zeros_like(c)
    for t in range(9):
        at = [c[min(max(t + n, 0), 8)] for n in range(-2, 3)]  # edge frames replicated
        expected[t] = (1 * (at[3] - at[1]) + 2 * (at[4] - at[0])) / 10
    assert torch.allclose(regression_deltas(c), expected, atol=1e-12)
    assert torch.allclose(regression_deltas(c[:1]), torch.zeros(1, 4, dtype=torch.float64))

    wave = speechlike(8000, 2)
    full = mfcc_frames(wave)
    static = mfcc_frames(wave, deltas=False)
    assert full.shape == (static.shape[0], 39)
    assert torch.equal(full[:, :13], static)
    first = regression_deltas(static.double())
    assert torch.allclose(full[:, 13:26].double(), first, atol=1e-4)
    assert torch.allclose(full[:, 26:].double(), regression_deltas(first), atol=1e-4)


def conv_encoder_frames(samples: int) -> int:
    """wav2vec 2.0's feature encoder: kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, ...)."""
    for kernel, stride in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        samples = max(0, (samples - kernel) // stride + 1)
    return samples


def test_frame_count_is_the_conv_encoders() -> None:
    wave = speechlike(3000, 3)
    for samples in [*range(395, 1050), 2999, 3000]:
        frames = mfcc_frames(wave[:samples]).shape[0]
        assert frames == 1 + (samples - 400) // 320 == conv_encoder_frames(samples)
    short = mfcc_frames(wave[:399])
    assert short.shape == (0, 39) and short.dtype == torch.float32
    assert mfcc_frames(np.zeros(0, dtype=np.float32), deltas=False).shape == (0, 13)
    assert torch.equal(mfcc_frames(torch.from_numpy(wave)), mfcc_frames(wave))


def test_mfcc_refuses_bad_input() -> None:
    with pytest.raises(DataError, match="1-D"):
        mfcc_frames(np.zeros((2, 800), dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        mfcc_frames(np.full(800, np.nan, dtype=np.float32))
    with pytest.raises(ConfigError, match="n_mfcc"):
        mfcc_frames(np.zeros(800, dtype=np.float32), n_mfcc=41)
    with pytest.raises(ConfigError, match="hop"):
        mfcc_frames(np.zeros(800, dtype=np.float32), hop=0)


def test_fit_mean_std_over_utterances() -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 3, generator=g) * torch.tensor([1.0, 5.0, 0.0]) + 2.0
             for n in (10, 0, 37)]
    mean, std = fit_mean_std(feats)
    everything = torch.cat(feats).double()
    assert torch.allclose(mean.double(), everything.mean(0), atol=1e-6)
    assert torch.allclose(std[:2].double(), everything.std(0, unbiased=False)[:2], atol=1e-6)
    assert float(std[2]) > 0  # a constant dimension is floored, not zero
    with pytest.raises(DataError, match="no frames"):
        fit_mean_std([torch.zeros(0, 3)])
    with pytest.raises(DataError, match="feature size"):
        fit_mean_std([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(DataError, match="NaN"):
        fit_mean_std([torch.full((2, 3), float("nan"))])


def blobs(seed: int, spread: float = 2.0) -> tuple[torch.Tensor, np.ndarray]:
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.make_blobs(3000, centers=6, n_features=5, cluster_std=spread,
                               random_state=seed)
    return torch.from_numpy(x), y


@pytest.mark.parametrize("seed,iterations", [(0, 30), (1, 3), (2, 100)])
def test_lloyd_matches_scikit_learn_from_the_same_init(seed: int, iterations: int) -> None:
    cluster = pytest.importorskip("sklearn.cluster")
    x, _ = blobs(seed)  # overlapping blobs: Lloyd takes many steps to settle
    init = KMeans.init_plus_plus(x, 6, torch.Generator().manual_seed(seed))
    ours = KMeans.fit(x, 6, iterations=iterations, seed=seed, tolerance=0.0)
    theirs = cluster.KMeans(n_clusters=6, init=init.numpy(), n_init=1, algorithm="lloyd",
                            tol=0.0, max_iter=iterations).fit(x.numpy())
    assert float(np.abs(ours.centroids.numpy() - theirs.cluster_centers_).max()) < 1e-4
    assert np.array_equal(ours.assign(x).numpy(), theirs.labels_)
    assert abs(ours.inertia(x) - theirs.inertia_) < 1e-6 * theirs.inertia_


def test_empty_clusters_are_reseeded_like_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = pytest.importorskip("sklearn.cluster")
    x, _ = blobs(3)
    init = KMeans.init_plus_plus(x, 6, torch.Generator().manual_seed(3))
    init[4] = 1e3  # nothing is nearest to it: empty after the first assignment
    monkeypatch.setattr(KMeans, "init_plus_plus", staticmethod(lambda *args: init.clone()))
    ours = KMeans.fit(x, 6, iterations=50, tolerance=0.0)
    theirs = cluster.KMeans(n_clusters=6, init=init.numpy(), n_init=1, algorithm="lloyd",
                            tol=0.0, max_iter=50).fit(x.numpy())
    assert float(ours.centroids[4].abs().max()) < 100  # moved onto the data
    assert len(set(ours.assign(x).tolist())) == 6
    assert float(np.abs(ours.centroids.numpy() - theirs.cluster_centers_).max()) < 1e-4


def test_recovers_well_separated_blobs_in_float32() -> None:
    x, y = blobs(4, spread=0.5)
    labels = KMeans.fit(x.float(), 6, seed=4).assign(x.float()).numpy()
    # Each true blob is exactly one cluster (a bijection between labelings).
    pairs = set(zip(y.tolist(), labels.tolist()))
    assert len(pairs) == 6 and len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 6


def test_fit_is_deterministic_given_the_seed() -> None:
    x, _ = blobs(5)
    a = KMeans.fit(x.float(), 8, iterations=10, seed=1).centroids
    b = KMeans.fit(x.float(), 8, iterations=10, seed=1).centroids
    c = KMeans.init_plus_plus(x.float(), 8, torch.Generator().manual_seed(2))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(KMeans.init_plus_plus(x.float(), 8, torch.Generator().manual_seed(1)),
                           c)


def test_assignment_is_chunked_without_changing_the_result(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from seqformer.data import units

    x, _ = blobs(6)
    km = KMeans.fit(x, 6, iterations=5)
    whole = km.assign(x)
    monkeypatch.setattr(units, "CHUNK_ELEMENTS", 7 * 6)  # chunks of 7 rows
    assert torch.equal(km.assign(x), whole)
    assert torch.equal(KMeans.fit(x, 6, iterations=5).centroids, km.centroids)
    expected = ((x[:, None, :] - km.centroids[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(whole, expected)
    assert km.assign(torch.zeros(0, 5, dtype=torch.float64)).shape == (0,)


def test_save_load_round_trip(tmp_path) -> None:
    x, _ = blobs(7)
    km = KMeans.fit(x.float(), 4, iterations=5)
    path = tmp_path / "units" / "units.safetensors"
    km.save(path)
    km.save(path)  # replacing is fine too
    loaded = KMeans.load(path)
    assert torch.equal(loaded.centroids, km.centroids)
    assert [p.name for p in path.parent.iterdir()] == ["units.safetensors"]  # no temp files
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        KMeans.load(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        KMeans.load(tmp_path / "missing.safetensors")


def test_kmeans_refuses_bad_input() -> None:
    x, _ = blobs(8)
    with pytest.raises(DataError, match="exceed"):
        KMeans.fit(x[:3], 4)
    with pytest.raises(DataError, match="NaN"):
        KMeans.fit(torch.full((10, 2), float("nan")), 2)
    with pytest.raises(DataError, match="points, dims"):
        KMeans.fit(x[:, 0], 2)
    km = KMeans(torch.zeros(2, 5))
    with pytest.raises(DataError, match="dims"):
        km.assign(torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="k >= 1"):
        KMeans.fit(x, 0)
