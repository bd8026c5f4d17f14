"""The task side of DiscreteBERT's unit front end: fit_front_end clusters the frames of the
*normalised* waveforms (what the model reads), so the recording gain cannot move the units, and
the ids the model then gives its training audio are the k-means labels of those very frames."""

from __future__ import annotations

import numpy as np
import torch

from seqformer.data.units import KMeans, unit_features
from seqformer.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
from seqformer.recipe_ssl import UnitsConfig
from seqformer.tasks.speech_ssl import fit_front_end, normalise

SMALL = dict(d_model=16, heads=2, layers=1, ffn_dim=32, pos_conv_kernel=4, pos_conv_groups=2,
             frontend="units", units_k=5)


def waves(gain: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(6000) / 16000
    return [gain * (np.sin(2 * np.pi * f * t) * np.abs(np.sin(np.pi * 3 * t))
                    + 0.2 * rng.standard_normal(len(t))).astype(np.float32)
            for f in (180.0, 320.0, 700.0)]


def test_front_end_fits_the_normalised_audio_so_gain_does_not_move_the_units() -> None:
    units = UnitsConfig(iterations=10, max_frames=100)
    models = []
    for gain in (1.0, 40.0):
        model = Wav2Vec2Model(Wav2Vec2Config(**SMALL))
        fit_front_end(model, waves(gain), units)
        models.append(model)
    front = [m.feature_extractor for m in models]
    assert front[0].fitted and torch.allclose(front[0].centroids, front[1].centroids, atol=1e-4)
    assert torch.allclose(front[0].mean, front[1].mean, atol=1e-4)
    # The model's ids of its training audio are the k-means labels of the normalised frames.
    kmeans = KMeans(front[0].centroids)
    for wave in waves(1.0):
        x = normalise(wave)
        feats = (unit_features(x) - front[0].mean) / front[0].std
        assert torch.equal(models[0].unit_ids(x.unsqueeze(0))[0], kmeans.assign(feats))
    # Raw (unnormalised) MFCCs would have been other frames: c0 shifts with the gain.
    raw = unit_features(torch.as_tensor(waves(40.0)[0]))
    assert not torch.allclose(raw, unit_features(normalise(waves(40.0)[0])), atol=1e-2)
