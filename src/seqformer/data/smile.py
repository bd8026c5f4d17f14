"""openSMILE functionals: the hand-crafted feature sets of paralinguistics as a classifier input.

openSMILE (audEERING's *Speech & Music Interpretation by Large-space Extraction*, Eyben et al.
2010) computes low-level descriptors (pitch, jitter, shimmer, loudness, formants, MFCCs,
spectral slopes, ...) frame by frame and summarises each over the whole utterance with
functionals (means, percentiles, slopes, ...): one fixed-length vector per clip, whatever its
length. The standard sets (:data:`FEATURE_SETS`): **eGeMAPSv02** (88 values, the extended
Geneva Minimalistic Acoustic Parameter Set, Eyben et al. 2016), **GeMAPSv01b** (62, its
minimal core) and **ComParE_2016** (6,373, the brute-force set of the Interspeech ComParE
challenges). They are the baseline a learned audio model (AST, HuBERT) has to beat.

Extraction runs the ``SMILExtract`` library shipped in the PyPI ``opensmile`` wheel
(``pip install 'seqformer[opensmile]'``), imported only when needed: without it,
:func:`require_opensmile` fails with one line naming the package. Each clip's functionals
(16 kHz float samples through ``Smile.process_signal``) are cached as a float32 ``.npy`` under
``$SEQFORMER_CACHE/smile/<feature set>-<key>/`` (default ``~/.cache/seqformer``), named by a
hash of the samples themselves and keyed by the opensmile version and feature set: the cache
follows the audio wherever it came from (a new espeak-ng, another ``data.seed`` or the user's
WAVs give other samples, hence other entries), so re-runs and ``evaluate`` never re-extract,
and a stale entry can never be served for changed audio.

:class:`Standardiser` is the train-split mean / std of every functional; the classifier sees
z-scores (functionals span Hz, dB and ratios, many orders of magnitude apart). It is fitted on
the training split only and saved in the run's ``config.json`` (``features``) so inference
repeats it exactly.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from seqformer.data.speech import SAMPLE_RATE, _load_npy, _save_npy
from seqformer.errors import CheckpointError, ConfigError, DataError

# openSMILE feature sets offered, and the number of functionals each gives per clip.
FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373, "GeMAPSv01b": 62}
FEATURE_LEVEL = "functionals"
INSTALL_HINT = "install it with: pip install 'seqformer[opensmile]' (or pip install opensmile)"
# Bump when extraction changes (its input scaling, the level), so stale caches are not reused.
_CACHE_FORMAT = 1
# A functional whose train std is below this is constant (e.g. F0 of unvoiced-only clips):
# divided by 1, not by ~0, so an unseen non-constant value cannot explode.
MIN_STD = 1e-6


def require_opensmile() -> ModuleType:
    """The ``opensmile`` module, or a one-line ConfigError saying what to install."""
    try:
        import opensmile
    except ImportError:
        raise ConfigError("model.kind: opensmile (family smile-classify) needs the opensmile "
                          f"package; {INSTALL_HINT}") from None
    return opensmile


def check_feature_set(name: str, where: str = "model.feature_set") -> None:
    if name not in FEATURE_SETS:
        raise ConfigError(f"{where}={name!r}; use one of {', '.join(FEATURE_SETS)}")


@lru_cache(maxsize=4)
def smile(feature_set: str) -> Any:
    """One ``opensmile.Smile`` per feature set: building it parses the config (~0.2 s), so it
    is made once and reused for every clip."""
    check_feature_set(feature_set)
    opensmile = require_opensmile()
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel.Functionals)


def opensmile_version() -> str:
    return str(getattr(require_opensmile(), "__version__", "unknown"))


def functionals(waveform: np.ndarray, feature_set: str) -> np.ndarray:
    """The ``feature_set`` functionals (float32, one row) of a 16 kHz float waveform: exactly
    ``Smile.process_signal``, uncached."""
    with warnings.catch_warnings():  # "Segment too short": extract() says it in one line
        warnings.simplefilter("ignore", UserWarning)
        frame = smile(feature_set).process_signal(np.asarray(waveform, dtype=np.float32),
                                                  SAMPLE_RATE)
    return np.asarray(frame.to_numpy(), dtype=np.float32).reshape(-1)


def cache_root(feature_set: str) -> Path:
    """Where ``feature_set``'s functionals are cached, keyed by the opensmile version."""
    from seqformer.data.bible import cache_dir

    key = hashlib.sha1(f"{opensmile_version()}|{feature_set}|{FEATURE_LEVEL}|{_CACHE_FORMAT}"
                       .encode()).hexdigest()[:12]
    return cache_dir() / "smile" / f"{feature_set}-{key}"


def clip_key(waveform: np.ndarray) -> str:
    """A name for one clip's samples: its float32 bytes and sample rate, hashed."""
    samples = np.ascontiguousarray(waveform, dtype=np.float32)
    h = hashlib.sha256(f"{SAMPLE_RATE}|{samples.size}|".encode())
    h.update(samples.tobytes())
    return h.hexdigest()[:32]


def extract(waveforms: Sequence[np.ndarray], feature_set: str, log: object = None,
            cache: bool = True, sources: Sequence[str] = ()) -> np.ndarray:
    """(N, FEATURE_SETS[feature_set]) float32 functionals of N 16 kHz waveforms, each from the
    cache or openSMILE (then cached). A clip openSMILE cannot summarise (too short for one
    analysis window) is a DataError naming it (``sources``: where each clip came from), not a
    row of NaNs."""
    check_feature_set(feature_set)
    width = FEATURE_SETS[feature_set]
    root = cache_root(feature_set) if cache else None
    keys = [clip_key(w) for w in waveforms] if cache else []
    rows: list[np.ndarray | None] = ([_load_npy(root / k[:2] / f"{k}.npy") for k in keys]
                                     if root is not None else [None] * len(waveforms))
    rows = [r if r is not None and r.shape == (width,) else None for r in rows]
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing and len(missing) > 1 and callable(log):
        log(f"openSMILE {feature_set} functionals of {len(missing)} of {len(waveforms)} clips"
            + (f" (cached in {root})" if root is not None else ""))
    for i in missing:
        row = functionals(waveforms[i], feature_set)
        if row.shape != (width,):
            raise DataError(f"openSMILE {feature_set} gave {row.size} functionals, expected "
                            f"{width}; opensmile {opensmile_version()} is not supported")
        if not np.isfinite(row).all():
            name = sources[i] if i < len(sources) and sources[i] else f"clip {i + 1}"
            raise DataError(f"{name} ({np.asarray(waveforms[i]).size} samples): openSMILE "
                            f"{feature_set} functionals are not finite; give clips of at least "
                            f"0.1 s ({SAMPLE_RATE // 10} samples at {SAMPLE_RATE} Hz)")
        if root is not None:
            k = keys[i]
            _save_npy(root / k[:2] / f"{k}.npy", row)
        rows[i] = row
    if not rows:
        return np.zeros((0, width), dtype=np.float32)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


@dataclass(frozen=True)
class Standardiser:
    """Per-functional mean and std of the training split: ``(x - mean) / std``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train: np.ndarray) -> Standardiser:
        """Stats of the training functionals (N, F) only: fitting on valid or test would leak
        them into the model's input."""
        x = np.asarray(train, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise DataError(f"need at least two training clips to standardise functionals, got "
                            f"{len(x)}")
        std = x.std(axis=0)
        std[std < MIN_STD] = 1.0
        return cls(x.mean(axis=0).astype(np.float32), std.astype(np.float32))

    def __call__(self, features: np.ndarray) -> torch.Tensor:
        """(N, F) z-scores as a float32 tensor."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def to_dict(self) -> dict[str, list[float]]:
        # float32 -> Python float is exact, so the JSON round trip gives the same stats.
        return {"mean": self.mean.astype(np.float64).tolist(),
                "std": self.std.astype(np.float64).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], width: int, where: str) -> Standardiser:
        """The stats saved in config.json ``features``; a CheckpointError when they are missing
        or do not have ``width`` values (the feature set's)."""
        try:
            mean = np.asarray(data["mean"], dtype=np.float32)
            std = np.asarray(data["std"], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{where}: features.mean / features.std (the training "
                                  "split's functional statistics) are missing") from None
        if mean.shape != (width,) or std.shape != (width,) or not (std > 0).all():
            raise CheckpointError(f"{where}: features.mean / features.std must hold {width} "
                                  f"values (std > 0), got {mean.size} / {std.size}")
        return cls(mean, std)


def settings(feature_set: str) -> dict[str, Any]:
    """What inference must repeat besides the stats (config.json ``features``)."""
    return {"extractor": "opensmile", "opensmile": opensmile_version(),
            "feature_set": feature_set, "feature_level": FEATURE_LEVEL,
            "sample_rate": SAMPLE_RATE}
