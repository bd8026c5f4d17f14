"""HuBERT's second iteration without audio synthesis: the features of a previous run's layer
are what that layer gives each utterance alone (eval mode, no gradients, batched by length),
the source run is checked against units.layer and the new model's conv layout in one line, and
a resumed run refuses units labelled from another layer or another state of the source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining, frame_lengths
from seqformer.recipe_ssl import ssl_recipe_from_dict
from seqformer.tasks.speech_ssl import (
    check_resumed_units,
    encoder_features,
    save_units,
    units_source,
)

SMALL = dict(conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), d_model=16,
             heads=2, layers=3, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2,
             dropout=0.1, attention_dropout=0.1)


def recipe(**units):
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}
    return ssl_recipe_from_dict({"task": "speech-pretrain",
                                 "model": {**model, "objective": "units", "num_units": 4},
                                 "units": units})


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_encoder_features_are_each_utterances_layer_alone(layer: int) -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**SMALL, objective="units", num_units=4))
    encoder = model.wav2vec2.train()  # dropout on: the features must still be eval mode's
    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(n, generator=g) for n in (800, 333, 700, 555, 420)]
    feats = encoder_features(encoder, waves, layer, batch_size=2)
    assert encoder.training  # restored
    frames = frame_lengths(encoder.config, torch.tensor([len(w) for w in waves])).tolist()
    assert [f.shape for f in feats] == [(n, 16) for n in frames]
    encoder.eval()
    with torch.no_grad():
        for wave, got in zip(waves, feats, strict=True):
            states, _, _ = encoder.hidden_states(wave.unsqueeze(0))
            assert not got.requires_grad and got.dtype == torch.float32
            assert float((got - states[layer][0]).abs().max()) <= 1e-5


def test_units_source_checks_the_layer_and_the_conv_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Wav2Vec2ForPreTraining(Wav2Vec2Config(**SMALL, objective="contrastive")).save(tmp_path / "run")
    r = recipe(from_run=str(tmp_path / "run"), layer=2)
    source = units_source(r, r.model_config())
    assert source is not None and source.layer == 2 and source.normalize
    assert source.config.layers == 3 and source.describe()["layer"] == 2
    default = recipe(from_run=str(tmp_path / "run"))
    assert units_source(default, default.model_config()).layer == 1  # the middle: 3 // 2
    assert units_source(recipe(), recipe().model_config()) is None

    bad = recipe(from_run=str(tmp_path / "run"), layer=4)
    with pytest.raises(ConfigError, match=r"units.layer=4.*3 layers") as err:
        units_source(bad, bad.model_config())
    assert "\n" not in str(err.value)
    stride = ssl_recipe_from_dict({"task": "speech-pretrain", "model": {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()},
        "conv_stride": [5, 2, 3], "objective": "units", "num_units": 4},
        "units": {"from_run": str(tmp_path / "run")}})
    with pytest.raises(ConfigError, match="model.conv_stride"):
        units_source(stride, stride.model_config())
    missing = recipe(from_run=str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="nowhere"):
        units_source(missing, missing.model_config())


def test_resume_refuses_units_of_another_layer_or_source_state(tmp_path: Path) -> None:
    from seqformer.data.units import KMeans

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**SMALL, objective="contrastive"))
    model.save(tmp_path / "run")
    r = recipe(from_run=str(tmp_path / "run"), layer=2)
    record = units_source(r, r.model_config()).describe()
    kmeans = KMeans(torch.randn(4, 16))
    save_units(tmp_path / "new", kmeans, torch.zeros(16), torch.ones(16), record)
    check_resumed_units(tmp_path / "new", record)  # the same: fine
    other = recipe(from_run=str(tmp_path / "run"), layer=1)
    with pytest.raises(ConfigError, match="layer"):
        check_resumed_units(tmp_path / "new", units_source(other, other.model_config()).describe())
    with pytest.raises(ConfigError, match="from_run"):
        check_resumed_units(tmp_path / "new", None)  # MFCC units now
    with torch.no_grad():
        model.wav2vec2.masked_spec_embed.add_(1.0)
    model.save(tmp_path / "run")  # the source trained on since
    with pytest.raises(ConfigError, match="source_weights_sha256"):
        check_resumed_units(tmp_path / "new", units_source(r, r.model_config()).describe())
