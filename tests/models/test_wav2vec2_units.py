"""DiscreteBERT's unit front end (``frontend: units`` on the wav2vec2 backbone): the model's unit
ids are data/units.py's k-means assignment of each utterance's own frame features, padding
changes nothing, a masked frame's own unit cannot reach the encoder, the pretraining head
predicts the input units, the centroids travel with save/load and into a fine-tuning model,
and inconsistent configs fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.data.masking import span_mask
from seqformer.data.units import KMeans, fit_mean_std, unit_features
from seqformer.errors import ConfigError
from seqformer.models.wav2vec2 import (
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    WaveBatch,
    frame_lengths,
)

SMALL = dict(d_model=16, heads=2, layers=2, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2,
             dropout=0.0, attention_dropout=0.0, conv_dim=(8,), conv_kernel=(10,),
             conv_stride=(5,), frontend="units", units_k=6, depthwise_kernel=5)
LENGTHS = torch.tensor([4000, 3000, 1500, 400])


def config(**overrides) -> Wav2Vec2Config:
    return Wav2Vec2Config(**{**SMALL, **overrides})


def padded_waves(seed: int = 0) -> torch.Tensor:
    """A padded batch of 'speech': noise bursts and tones of varying level, so frames differ."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(LENGTHS.max())) / 16000
    rows = []
    for b in range(len(LENGTHS)):
        pitch = 150.0 + 400.0 * float(torch.rand(1, generator=g))
        envelope = torch.sin(torch.pi * t * (2 + b)).abs()
        rows.append(envelope * torch.sin(2 * torch.pi * pitch * t)
                    + 0.3 * torch.randn(len(t), generator=g) * (t > 0.1 * b))
    waves = torch.stack(rows)
    return waves * (torch.arange(waves.shape[1]) < LENGTHS.unsqueeze(1))


def fitted(model: torch.nn.Module, waves: torch.Tensor, c: Wav2Vec2Config) -> KMeans:
    """Fit the front end's k-means on the batch's own frames, as the task does, and install
    it in ``model`` (a backbone or a head model)."""
    feats = [unit_features(waves[b, : int(n)], c.units_features, c.units_n_mfcc, c.units_n_mels)
             for b, n in enumerate(LENGTHS)]
    mean, std = fit_mean_std(feats)
    kmeans = KMeans.fit((torch.cat(feats) - mean) / std, c.units_k, 10, seed=0)
    backbone = model if isinstance(model, Wav2Vec2Model) else model.wav2vec2
    backbone.set_units(kmeans.centroids, mean, std)
    return kmeans


@pytest.mark.parametrize("features", ["mfcc", "log-mel"])
def test_unit_ids_are_the_kmeans_assignment_of_each_utterances_frames(features: str) -> None:
    c = config(units_features=features, units_n_mels=24, units_n_mfcc=8)
    torch.manual_seed(0)
    model = Wav2Vec2Model(c)
    waves = padded_waves()
    kmeans = fitted(model, waves, c)
    ids = model.unit_ids(waves, LENGTHS)
    frames = frame_lengths(c, LENGTHS)
    assert ids.shape == (len(LENGTHS), int(frames.max())) and ids.dtype == torch.long
    mean, std = model.feature_extractor.mean, model.feature_extractor.std
    for b, n in enumerate(frames.tolist()):
        feats = unit_features(waves[b, : int(LENGTHS[b])], features, 8, 24)
        assert feats.shape == (n, 24)  # 3 x 8 cepstra with deltas, or 24 bands
        assert torch.equal(ids[b, :n], kmeans.assign((feats - mean) / std))
        assert not ids[b, n:].any()  # padding: id 0
    assert len(ids[0].unique()) > 2  # the units really vary along an utterance


def test_frames_are_400_sample_windows_every_320() -> None:
    samples = torch.tensor([400, 719, 720, 16000, 399])
    expected = torch.tensor([1, 1, 2, 49, 0])
    assert torch.equal(frame_lengths(config(), samples), expected)
    default = Wav2Vec2Config()  # the conv layout the unit frames are aligned with
    assert torch.equal(frame_lengths(default, samples), expected)
    assert config().receptive_field == 400 and config().samples_per_frame == 320


@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_padding_does_not_change_an_utterance(block: str) -> None:
    c = config(encoder_block=block)
    torch.manual_seed(0)
    model = Wav2Vec2Model(c).eval()
    waves = padded_waves()
    fitted(model, waves, c)
    with torch.no_grad():
        batch, _, valid = model(waves, LENGTHS)
        for b, n in enumerate(LENGTHS.tolist()):
            alone, _, _ = model(waves[b: b + 1, :n])
            frames = int(valid[b].sum())
            assert alone.shape[1] == frames
            assert float((alone[0] - batch[b, :frames]).abs().max()) <= 1e-5


def test_a_masked_frame_does_not_see_its_own_unit() -> None:
    c = config()
    torch.manual_seed(0)
    model = Wav2Vec2Model(c).eval()
    waves = padded_waves()
    fitted(model, waves, c)
    frames = frame_lengths(c, LENGTHS)
    mask = span_mask(frames, int(frames.max()), 0.5, 3, torch.Generator().manual_seed(0))
    ids = model.unit_ids(waves, LENGTHS)
    with torch.no_grad():
        # The encoder's input at a masked frame is the mask embedding itself.
        inputs = model._inputs(waves, LENGTHS, mask, ids)[0]
        assert torch.equal(inputs[mask], model.masked_spec_embed.expand(int(mask.sum()), -1))
        reference, _, _ = model(waves, LENGTHS, mask, unit_ids=ids)
        # Any other unit under the mask: nothing anywhere in the output changes ...
        other = torch.where(mask, (ids + 1 + torch.arange(ids.numel()).view(ids.shape) % 4)
                            % c.units_k, ids)
        assert bool((other != ids)[mask].all())
        hidden, _, _ = model(waves, LENGTHS, mask, unit_ids=other)
        assert torch.equal(hidden, reference)
        # ... whereas changing one unmasked valid frame's unit does change the output.
        b, t = [(b, t) for b in range(len(LENGTHS)) for t in range(int(frames[b]))
                if not mask[b, t]][0]
        visible = ids.clone()
        visible[b, t] = (visible[b, t] + 1) % c.units_k
        changed, _, _ = model(waves, LENGTHS, mask, unit_ids=visible)
        assert not torch.allclose(changed[b], reference[b])


def test_discrete_bert_predicts_the_masked_input_units() -> None:
    c = config(objective="units", num_units=6)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(c)
    waves = padded_waves()
    fitted(model, waves, c)
    frames = frame_lengths(c, LENGTHS)
    mask = span_mask(frames, int(frames.max()), 0.65, 3, torch.Generator().manual_seed(1))
    batch = WaveBatch(waves, LENGTHS, mask_time=mask)
    model.eval()
    with torch.no_grad():
        out = model(batch)
        ids = model.wav2vec2.unit_ids(waves, LENGTHS)
        valid = torch.arange(ids.shape[1]) < frames.unsqueeze(1)
        scored = mask & valid
        expected = torch.nn.functional.cross_entropy(out.logits[scored], ids[scored])
    assert out.n_tokens == int(scored.sum()) > 0
    assert float((out.loss - expected).abs()) <= 1e-5
    # Given targets (HuBERT's second iteration on a unit front end) are used instead.
    with torch.no_grad():
        given = model(WaveBatch(waves, LENGTHS, mask_time=mask, units=(ids + 1) % 6))
    assert float(given.loss) != pytest.approx(float(out.loss))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    embedding = model.wav2vec2.feature_extractor.embedding.weight
    assert embedding.grad is not None and bool(embedding.grad.abs().sum() > 0)


def test_units_travel_with_save_load_and_into_a_ctc_model(tmp_path: Path) -> None:
    c = config(objective="units", num_units=6)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(c).eval()
    waves = padded_waves()
    fitted(model, waves, c)
    model.save(tmp_path / "pre")
    loaded = Wav2Vec2ForPreTraining.load(tmp_path / "pre")
    assert loaded.config.frontend == "units" and loaded.config.units_k == 6
    assert torch.equal(loaded.wav2vec2.unit_ids(waves, LENGTHS),
                       model.wav2vec2.unit_ids(waves, LENGTHS))
    ctc = Wav2Vec2ForCTC(config(objective="units", num_units=6, vocab_size=5))
    assert not ctc.wav2vec2.feature_extractor.fitted
    with pytest.raises(ConfigError, match="no k-means units yet"):
        ctc.logits(waves, LENGTHS)
    ctc.load_backbone(tmp_path / "pre").eval()
    front, source = ctc.wav2vec2.feature_extractor, model.wav2vec2.feature_extractor
    for name in ("centroids", "mean", "std"):
        assert torch.equal(getattr(front, name), getattr(source, name))
    logits, valid = ctc.logits(waves, LENGTHS)
    assert logits.shape == (4, int(frame_lengths(c, LENGTHS).max()), 5)
    assert torch.equal(valid.sum(1), frame_lengths(c, LENGTHS))
    # A conv backbone cannot take the units one's weights (nor the reverse).
    conv = Wav2Vec2ForCTC(Wav2Vec2Config(**{**SMALL, "frontend": "conv", "units_k": 0},
                                         vocab_size=5))
    with pytest.raises(Exception, match="model.frontend"):
        conv.load_backbone(tmp_path / "pre")


@pytest.mark.parametrize("overrides,message", [
    (dict(frontend="spectrogram"), "model.frontend"),
    (dict(units_k=1), "model.units_k >= 2"),
    (dict(frontend="conv"), "model.units_k=6 sizes a unit front end"),
    (dict(units_features="fbank"), "model.units_features"),
    (dict(units_n_mfcc=41), "model.units_n_mfcc"),
    (dict(units_n_mels=0), "model.units_n_mels"),
])
def test_inconsistent_front_end_configs_are_one_line_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config(**overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("objective", ["contrastive", "w2v-bert"])
def test_contrastive_objectives_need_conv_features(objective: str) -> None:
    with pytest.raises(ConfigError, match=f"objective {objective} quantises the conv") as err:
        Wav2Vec2ForPreTraining(config(objective=objective))
    assert "\n" not in str(err.value)


def test_set_units_checks_shapes_and_conv_models_have_no_unit_ids() -> None:
    model = Wav2Vec2Model(config())
    with pytest.raises(ConfigError, match="centroids has shape"):
        model.set_units(torch.randn(5, 39), torch.zeros(39), torch.ones(39))
    with pytest.raises(ConfigError, match="std must be > 0"):
        model.set_units(torch.randn(6, 39), torch.zeros(39), torch.zeros(39))
    conv = Wav2Vec2Model(Wav2Vec2Config(**{**SMALL, "frontend": "conv", "units_k": 0}))
    with pytest.raises(ValueError, match="frontend=units"):
        conv.unit_ids(padded_waves(), LENGTHS)
    with pytest.raises(ValueError, match="shorter than the model's receptive field"):
        model.unit_ids(torch.zeros(1, 399))
