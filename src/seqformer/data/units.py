"""HuBERT's first-iteration targets: k-means units of MFCC frames (Hsu et al. 2021).

HuBERT learns by predicting, for masked frames, a discrete unit per frame. Its first iteration
takes the units from k-means over MFCCs (13 coefficients + deltas + delta-deltas = 39 dims);
later iterations re-cluster the model's own features. DiscreteBERT (``frontend: units`` in
``models/wav2vec2.py``) uses the same units as the encoder's *input*; :func:`unit_features`
(MFCC or log-mel frames by name) is the one function both the k-means fit and that front end
call, so they agree frame for frame. Three pieces live here:

:func:`mfcc_frames` -- one frame every ``hop`` = 320 samples over ``window`` = 400, with no
centre padding: ``1 + (len - 400) // 320`` frames, exactly what wav2vec 2.0's 7-layer conv
feature encoder (receptive field 400, stride 320) gives, so MFCC frame t is model frame t.
Per frame: periodic Hann window, power spectrum of an ``n_fft`` = 512 point FFT (the window
rounded up to a power of two), ``n_mels`` triangular filters on the HTK/Kaldi mel scale
(``1127 ln(1 + f / 700)``, triangles drawn in mel space, 20 Hz to Nyquist: ``data/fbank.py``'s
bank, Kaldi's defaults, which fairseq's HuBERT MFCC recipe uses), natural log floored at
float32 epsilon, orthonormal DCT-II keeping ``n_mfcc`` coefficients (c0 included, no
liftering), then HTK regression deltas and delta-deltas over +-2 frames with the edge frames
replicated. No pre-emphasis or dithering: the features only have to separate sounds, and a
deterministic function of the waveform keeps the units reproducible.

:class:`KMeans` -- k-means++ initialisation from a seeded ``torch.Generator``, then Lloyd
iterations with scikit-learn's stopping rules (labels unchanged, or the squared centroid shift
at most ``tolerance`` times the data's mean per-dimension variance). Distances are computed in
row chunks (at most ~4M distances at a time) in the data's dtype and centroid sums accumulated
in float64, so a million 39-dim frames cluster in a few hundred MB. A cluster left empty is
re-seeded, as scikit-learn does, at the point farthest from its centroid (one point per empty
cluster, taken from its old cluster), which keeps all ``k`` units in use.

:func:`fit_mean_std` -- per-dimension statistics so k-means sees standardised MFCCs (c0 and the
deltas have very different scales; unscaled, c0 alone would decide the units).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqformer.data.fbank import MEL_FLOOR, mel_filters
from seqformer.errors import CheckpointError, ConfigError, DataError

WINDOW = 400  # samples per frame: the receptive field of wav2vec 2.0's conv feature encoder
HOP = 320  # samples between frames: its stride (20 ms at 16 kHz)
FEATURE_KINDS = ("mfcc", "log-mel")  # what unit_features computes per frame
LOW_FREQ = 20.0  # Kaldi's (and so fairseq's HuBERT MFCC's) lowest filter edge, in Hz
DELTA_WINDOW = 2  # HTK's DELTAWINDOW: regression over +-2 frames
STD_FLOOR = 1e-5  # a constant dimension standardises to ~0 instead of dividing by zero
CHUNK_ELEMENTS = 1 << 22  # distances computed at a time by KMeans


def dct_matrix(n_mfcc: int, n_mels: int) -> Tensor:
    """(n_mfcc, n_mels) float64 orthonormal DCT-II rows: ``log_mel @ dct.T`` are the cepstra,
    equal to ``scipy.fft.dct(log_mel, norm="ortho")[..., :n_mfcc]``."""
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(1)
    m = torch.arange(n_mels, dtype=torch.float64).unsqueeze(0)
    basis = torch.cos(math.pi * k * (2 * m + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis


def regression_deltas(x: Tensor, width: int = DELTA_WINDOW) -> Tensor:
    """HTK regression deltas along frames (dim 0): ``sum_n n (x[t+n] - x[t-n]) / (2 sum_n
    n^2)`` for n = 1..width, frames before the first / after the last replicated."""
    if x.shape[0] == 0:
        return x.clone()
    padded = torch.cat([x[:1].expand(width, *x.shape[1:]), x,
                        x[-1:].expand(width, *x.shape[1:])])
    frames = x.shape[0]
    out = torch.zeros_like(x)
    for n in range(1, width + 1):
        out += n * (padded[width + n: width + n + frames] - padded[width - n: width - n + frames])
    return out / (2 * sum(n * n for n in range(1, width + 1)))


def _wave(wave: np.ndarray | Tensor) -> Tensor:
    x = wave.detach().cpu() if isinstance(wave, Tensor) else torch.from_numpy(np.asarray(wave))
    if x.dim() != 1:
        raise DataError(f"mfcc_frames: expected a 1-D waveform, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"mfcc_frames: expected real samples, got {x.dtype}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DataError("mfcc_frames: the waveform contains NaN or infinite samples")
    return x


def log_mel_frames(wave: np.ndarray | Tensor, n_mels: int = 40, window: int = 400,
                   hop: int = 320, sample_rate: int = 16000) -> Tensor:
    """(frames, n_mels) float64 log mel energies, the step of :func:`mfcc_frames` before the
    DCT; 0 frames when the wave is shorter than one window."""
    for name, value in (("n_mels", n_mels), ("window", window), ("hop", hop),
                        ("sample_rate", sample_rate)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"mfcc_frames: {name} must be a positive integer, got {value!r}")
    x = _wave(wave)
    n_fft = max(512, 1 << math.ceil(math.log2(window)))
    if x.numel() < window:
        return torch.zeros(0, n_mels, dtype=torch.float64)
    frames = x.unfold(0, window, hop) * torch.hann_window(window, periodic=True,
                                                          dtype=torch.float64)
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2
    mel = power @ mel_filters(n_mels, n_fft, sample_rate, LOW_FREQ)
    return torch.log(mel.clamp(min=MEL_FLOOR))


def mfcc_frames(wave: np.ndarray | Tensor, n_mfcc: int = 13, n_mels: int = 40, window: int = 400,
                hop: int = 320, deltas: bool = True, sample_rate: int = 16000) -> Tensor:
    """(frames, n_mfcc * (3 if deltas else 1)) float32 MFCCs [+ deltas + delta-deltas] of one
    mono waveform, frames = 1 + (len - window) // hop (0 when shorter than a window)."""
    if not isinstance(n_mfcc, int) or not 1 <= n_mfcc <= n_mels:
        raise ConfigError(f"mfcc_frames: n_mfcc must be in [1, n_mels={n_mels}], got {n_mfcc!r}")
    ceps = log_mel_frames(wave, n_mels, window, hop, sample_rate) @ dct_matrix(n_mfcc, n_mels).T
    if deltas:
        first = regression_deltas(ceps)
        ceps = torch.cat([ceps, first, regression_deltas(first)], dim=1)
    return ceps.to(torch.float32)


def feature_dim(kind: str = "mfcc", n_mfcc: int = 13, n_mels: int = 40) -> int:
    """Values per frame of :func:`unit_features`: 3 x ``n_mfcc`` (MFCC + deltas +
    delta-deltas) or ``n_mels`` (log-mel)."""
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"unit features: kind must be one of {', '.join(FEATURE_KINDS)}, "
                          f"got {kind!r}")
    return 3 * n_mfcc if kind == "mfcc" else n_mels


def unit_features(wave: np.ndarray | Tensor, kind: str = "mfcc", n_mfcc: int = 13,
                  n_mels: int = 40) -> Tensor:
    """(frames, :func:`feature_dim`) float32 frame features of one waveform, 400-sample
    windows every 320: :func:`mfcc_frames` (with deltas) or :func:`log_mel_frames`. One
    function for every caller that quantises frames -- the pretraining task fitting k-means
    and a unit front end labelling its input (``models/wav2vec2.py``) -- so the two compute
    the same numbers and therefore the same units."""
    feature_dim(kind, n_mfcc, n_mels)  # refuses an unknown kind
    if kind == "mfcc":
        return mfcc_frames(wave, n_mfcc, n_mels, WINDOW, HOP)
    return log_mel_frames(wave, n_mels, WINDOW, HOP).to(torch.float32)


def fit_mean_std(frames: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and (population) standard deviation, float32 (D,), over all frames
    of all utterances; two float64 passes, and the std floored at ``STD_FLOOR``."""
    feats = [torch.as_tensor(f) for f in frames]
    if any(f.dim() != 2 for f in feats):
        raise DataError("fit_mean_std: every utterance must be (frames, dims)")
    if not feats or len({f.shape[1] for f in feats}) != 1:
        raise DataError(f"fit_mean_std: need utterances with one feature size, got "
                        f"{sorted({f.shape[1] for f in feats})}")
    count = sum(f.shape[0] for f in feats)
    if count == 0:
        raise DataError("fit_mean_std: no frames to compute statistics from")
    if not all(bool(torch.isfinite(f).all()) for f in feats):
        raise DataError("fit_mean_std: the features contain NaN or infinite values")
    mean = sum(f.double().sum(0) for f in feats) / count
    var = sum(((f.double() - mean) ** 2).sum(0) for f in feats) / count
    return mean.float(), var.sqrt().clamp(min=STD_FLOOR).float()


def _points(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.dtype.is_floating_point:
        raise DataError(f"{what}: expected a (points, dims) float tensor, got "
                        f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{what}: the points contain NaN or infinite values")
    return x.detach().cpu()


def _nearest(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """(labels (N,) long, squared distances (N,) float64) to the nearest centroid, in chunks;
    the lowest index wins a tie."""
    dtype = torch.promote_types(x.dtype, centroids.dtype)
    c = centroids.to(dtype)
    c_norm = (c * c).sum(1)
    step = max(1, CHUNK_ELEMENTS // max(1, c.shape[0]))
    labels = torch.empty(x.shape[0], dtype=torch.long)
    dist = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], step):
        chunk = x[start: start + step].to(dtype)
        # ||x||^2 is the same for every centroid: the argmin needs only ||c||^2 - 2 x.c.
        best, idx = torch.addmm(c_norm, chunk, c.T, alpha=-2.0).min(dim=1)
        labels[start: start + step] = idx
        dist[start: start + step] = (best.double() + (chunk * chunk).sum(1).double()).clamp(min=0)
    return labels, dist


class KMeans:
    """Fitted centroids (k, D); :meth:`assign` maps frames to their nearest unit."""

    def __init__(self, centroids: Tensor) -> None:
        self.centroids = _points(centroids, "KMeans centroids")

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def _check(self, x: Tensor, what: str) -> Tensor:
        x = _points(x, what)
        if x.shape[1] != self.centroids.shape[1]:
            raise DataError(f"{what}: points have {x.shape[1]} dims, the centroids "
                            f"{self.centroids.shape[1]}")
        return x

    def assign(self, x: Tensor) -> Tensor:
        """(N,) long index of each point's nearest centroid."""
        return _nearest(self._check(x, "KMeans.assign"), self.centroids)[0]

    def inertia(self, x: Tensor) -> float:
        """Sum of squared distances of the points to their nearest centroid."""
        x = self._check(x, "KMeans.inertia")
        labels = _nearest(x, self.centroids)[0]
        return float(((x.double() - self.centroids.double()[labels]) ** 2).sum())

    @staticmethod
    def init_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
        """(k, D) initial centroids, k-means++ (Arthur & Vassilvitskii 2007): the first a
        uniform point, each next a point drawn with probability proportional to its squared
        distance to the nearest centroid so far (uniform again if every point already sits on
        a centroid: fewer distinct points than k)."""
        x = _fit_points(x, k)
        chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
        nearest = _nearest(x, x[chosen[0]].unsqueeze(0))[1]
        for _ in range(1, k):
            total = float(nearest.sum())
            u = float(torch.rand(1, generator=generator, dtype=torch.float64))
            if total > 0:
                cumulative = nearest.cumsum(0)
                pick = int(torch.searchsorted(cumulative, torch.tensor([u * total],
                                                                       dtype=torch.float64),
                                              right=True))
                pick = min(pick, x.shape[0] - 1)
            else:
                pick = min(int(u * x.shape[0]), x.shape[0] - 1)
            chosen.append(pick)
            nearest = torch.minimum(nearest, _nearest(x, x[pick].unsqueeze(0))[1])
        return x[chosen].clone()

    @classmethod
    def fit(cls, x: Tensor, k: int, iterations: int = 50, seed: int = 0,
            tolerance: float = 1e-4, progress: bool = False) -> KMeans:
        """k-means++ then at most ``iterations`` Lloyd steps; stops early when no label
        changes or the squared centroid shift drops to ``tolerance`` x mean variance."""
        if iterations < 1:
            raise ConfigError(f"k-means iterations must be >= 1, got {iterations}")
        if tolerance < 0:
            raise ConfigError(f"k-means tolerance must be >= 0, got {tolerance}")
        x = _fit_points(x, k)
        centroids = cls.init_plus_plus(x, k, torch.Generator().manual_seed(seed))
        threshold = tolerance * float(x.double().var(dim=0, unbiased=False).mean())
        previous = None
        for step in range(iterations):
            labels, dist = _nearest(x, centroids)
            sums = torch.zeros(k, x.shape[1], dtype=torch.float64)
            counts = torch.zeros(k, dtype=torch.float64)
            chunk = max(1, CHUNK_ELEMENTS // max(1, x.shape[1]))
            for start in range(0, x.shape[0], chunk):
                part = labels[start: start + chunk]
                sums.index_add_(0, part, x[start: start + chunk].double())
                counts.index_add_(0, part, torch.ones(part.shape[0], dtype=torch.float64))
            _reseed_empty(x, labels, dist, sums, counts)
            # A cluster emptied by giving its only point away keeps its centroid.
            new = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1),
                              centroids.double()).to(x.dtype)
            shift = float(((new.double() - centroids.double()) ** 2).sum())
            centroids = new
            if progress:
                print(f"k-means iteration {step + 1}/{iterations}: inertia {float(dist.sum()):.6g}"
                      f", centroid shift {shift:.3g}", file=sys.stderr, flush=True)
            if previous is not None and torch.equal(labels, previous):
                break
            if shift <= threshold:
                break
            previous = labels
        return cls(centroids)

    def save(self, path: str | Path) -> None:
        """safetensors with one tensor, ``centroids``; written atomically."""
        from safetensors.torch import save_file

        from seqformer.training.checkpoint import atomic_write

        centroids = self.centroids.contiguous()
        atomic_write(path, lambda tmp: save_file({"centroids": centroids}, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> KMeans:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{path}: cannot read k-means centroids ({e})") from None
        if "centroids" not in tensors:
            raise CheckpointError(f"{path}: no 'centroids' tensor (found {sorted(tensors)})")
        try:
            return cls(tensors["centroids"])
        except DataError as e:
            raise CheckpointError(f"{path}: {e}") from None


def _fit_points(x: Tensor, k: int) -> Tensor:
    x = _points(x, "KMeans.fit")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k-means needs k >= 1 clusters, got {k!r}")
    if k > x.shape[0]:
        raise DataError(f"k-means: k={k} clusters exceed the {x.shape[0]} points")
    return x


def _reseed_empty(x: Tensor, labels: Tensor, dist: Tensor, sums: Tensor, counts: Tensor) -> None:
    """Give each empty cluster one of the points farthest from their centroid, moving it out
    of its old cluster (scikit-learn's relocation), in place on ``sums`` / ``counts``."""
    empty = (counts == 0).nonzero().flatten()
    if not len(empty):
        return
    far = dist.argsort(descending=True, stable=True)[: len(empty)]
    for cluster, point in zip(empty.tolist(), far.tolist()):
        donor = int(labels[point])
        sums[donor] -= x[point].double()
        counts[donor] -= 1
        sums[cluster] = x[point].double()
        counts[cluster] = 1
