"""openSMILE functionals (``data/smile.py``): the same numbers as calling opensmile directly, the
per-clip cache (hit, miss on changed audio), train-only standardisation and its JSON round
trip, and one-line errors for a missing package, a bad feature set and a too-short clip."""

from __future__ import annotations

import sys

import numpy as np
import opensmile
import pytest

from seqformer.data import smile
from seqformer.errors import CheckpointError, ConfigError, DataError

RATE = 16000


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A cache of this test's own, never the user's ~/.cache."""
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def vowel(f0: float = 150.0, seconds: float = 0.8, seed: int = 0) -> np.ndarray:
    """A synthetic voiced utterance: 10 harmonics of ``f0`` under a raised-cosine envelope,
    with a little noise; pitch is the one thing about it openSMILE must get right."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 11))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * t / seconds)
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (0.3 * wave * envelope + noise).astype(np.float32)


def test_extraction_equals_process_signal_and_the_cache_serves_it(private_cache,
                                                                  monkeypatch) -> None:
    clip = vowel()
    direct = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                             feature_level=opensmile.FeatureLevel.Functionals)
    frame = direct.process_signal(clip, RATE)
    ours = smile.extract([clip], "eGeMAPSv02")
    assert ours.shape == (1, 88) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[0], frame.to_numpy()[0].astype(np.float32))
    # The numbers mean what they say: mean F0 in semitones above 27.5 Hz is 150 Hz's.
    f0 = ours[0][list(frame.columns).index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert f0 == pytest.approx(12 * np.log2(150 / 27.5), abs=0.5)

    files = list(private_cache.rglob("*.npy"))
    assert len(files) == 1 and "eGeMAPSv02-" in str(files[0])

    def no_extraction(*_args: object) -> np.ndarray:
        raise AssertionError("extracted again instead of reading the cache")

    monkeypatch.setattr(smile, "functionals", no_extraction)
    np.testing.assert_array_equal(smile.extract([clip], "eGeMAPSv02"), ours)
    # Other audio is another entry: one changed sample misses the cache.
    changed = clip.copy()
    changed[100] += 1e-3
    with pytest.raises(AssertionError, match="extracted again"):
        smile.extract([changed], "eGeMAPSv02")
    with pytest.raises(AssertionError, match="extracted again"):  # another feature set too
        smile.extract([clip], "GeMAPSv01b")


def test_feature_sets_give_their_documented_widths() -> None:
    clips = [vowel(120.0), vowel(220.0, seed=1)]
    for name in ("GeMAPSv01b", "eGeMAPSv02"):
        x = smile.extract(clips, name, cache=False)
        assert x.shape == (2, smile.FEATURE_SETS[name]) and np.isfinite(x).all()
        assert not np.array_equal(x[0], x[1])  # two pitches, two vectors


def test_standardiser_uses_the_training_stats_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(50, 4)).astype(np.float32)
    train[:, 2] = 7.0  # a constant functional (e.g. F0 of unvoiced-only clips)
    valid = rng.normal(-20.0, 10.0, size=(10, 4)).astype(np.float32)
    scaler = smile.Standardiser.fit(train)
    np.testing.assert_allclose(scaler.mean, train.mean(axis=0), rtol=1e-6)
    assert scaler.std[2] == 1.0  # divided by 1, not by ~0
    np.testing.assert_allclose(scaler.std[[0, 1, 3]], train.std(axis=0)[[0, 1, 3]], rtol=1e-5)
    z = scaler(train).numpy()
    np.testing.assert_allclose(z[:, [0, 1, 3]].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(axis=0), 1.0, atol=1e-4)
    # Valid is transformed with train's stats, so it keeps its offset (not re-centred).
    assert scaler(valid).numpy()[:, 0].mean() < -3.0
    again = smile.Standardiser.from_dict(scaler.to_dict(), 4, "config.json")
    np.testing.assert_array_equal(again.mean, scaler.mean)
    np.testing.assert_array_equal(again.std, scaler.std)
    with pytest.raises(CheckpointError, match="must hold 88 values"):
        smile.Standardiser.from_dict(scaler.to_dict(), 88, "config.json")
    with pytest.raises(CheckpointError, match="missing"):
        smile.Standardiser.from_dict({}, 4, "config.json")


def test_one_line_errors(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="use one of eGeMAPSv02, ComParE_2016, GeMAPSv01b"):
        smile.extract([vowel()], "eGeMAPS")
    with pytest.raises(DataError, match=r"short.wav \(400 samples\).*at least 0.1 s"):
        smile.extract([vowel()[:400]], "eGeMAPSv02", sources=["short.wav"])
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import opensmile -> ImportError
    smile.smile.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'seqformer\[opensmile\]'") as info:
            smile.extract([vowel()], "eGeMAPSv02")
        assert "\n" not in str(info.value)
    finally:
        smile.smile.cache_clear()
