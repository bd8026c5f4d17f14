"""Self-supervised speech pretraining (``task: speech-pretrain``): a wav2vec 2.0-shaped encoder
learns from audio alone, so that a small labelled set goes further when it is fine-tuned
(``tasks/speech_ctc.py``).

Every objective hides spans of the encoder's input frames (``data/masking.py``: about half of
the frames, in spans of ``mask_time_length``) behind a learned vector and asks the Transformer
to say what was there from the context:

- ``contrastive`` (wav2vec 2.0, Baevski et al. 2020): pick the true quantised frame (a Gumbel
  product quantiser over the CNN features; vector quantisation as in vq-wav2vec) among
  ``num_negatives`` distractors drawn from other masked frames of the same utterance -- CPC's
  idea with a masked Transformer context instead of an autoregressive one;
- ``units`` (HuBERT, Hsu et al. 2021): predict the frame's k-means unit; the first iteration's
  units cluster MFCC frames (``data/units.py``), the second's (``units.from_run``) the hidden
  states after ``units.layer`` of a previous run's encoder (:func:`encoder_features`), fitted
  here on the training audio and saved with the run (``units.safetensors``, ``units.json``);
- ``reconstruct`` (Mockingjay-style, Liu et al. 2020): regress the standardised 40-band log-mel
  frame under the mask, an L1 loss. Mockingjay's input is that log-mel spectrogram; ours is the
  waveform, so the target is the log-mel frame aligned with each encoder frame;
- ``w2v-bert`` (Chung et al. 2021): the contrastive task on a middle layer and, above it,
  masked prediction of the quantiser's code ids -- both losses every step, no alternation.

DiscreteBERT (Baevski et al. 2019) is ``model.frontend: units`` with ``units``: the encoder
reads k-means units of MFCC frames instead of conv features and predicts the masked ones (the
targets are the model's own input ids, so no data-side units). The task fits that front end's
k-means here (:func:`fit_front_end`, with :func:`fit_units`) on the *normalised* training
audio -- what the model will read -- and installs it in the model, whose weights then carry it
to fine-tuning and inference; --resume takes it from the checkpoint instead of refitting.

What the task owns: reading the audio (the train split of a speech-to-text corpus; its
transcripts are never read), per-utterance normalisation (zero mean, unit variance, as
``Wav2Vec2FeatureExtractor`` does), the seeded masks and distractors of each batch (a pure
function of the seed and the batch position, so ``--resume`` repeats them), the Gumbel
temperature schedule (read from the stream's position, so it resumes too), validation on the
held-out voices with fixed masks, and the run directory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqformer.data.masking import sample_negatives, span_mask
from seqformer.data.mlm import ExampleStream
from seqformer.data.spoken_words import SpokenSet
from seqformer.data.units import KMeans, fit_mean_std, log_mel_frames, mfcc_frames, unit_features
from seqformer.errors import CheckpointError, ConfigError, DataError
from seqformer.models.wav2vec2 import (
    CONTRASTIVE_OBJECTIVES,
    Wav2Vec2Config,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    WaveBatch,
    backbone_config,
    frame_lengths,
    load_backbone,
    read_wav2vec2_config,
)
from seqformer.recipe_ssl import PretrainRecipe, UnitsConfig
from seqformer.tasks.rundir import log, write_run_metadata
from seqformer.training.trainer import Trainer, resolve_device

EVAL_BATCH = 64
UNITS_FILE = "units.safetensors"
UNITS_STATS = "units.json"
MFCC_UNITS = "mfcc13+deltas, 400-sample windows every 320"


@dataclass
class Utterance:
    """One training example: the normalised waveform and its frame targets (units (T,) long,
    or MFCC targets (T, F) float), when the objective has any."""

    wave: Tensor
    units: Tensor | None = None
    targets: Tensor | None = None


def normalise(wave: np.ndarray | Tensor) -> Tensor:
    """Zero mean, unit variance over the utterance's own samples (``do_normalize`` of HF's
    feature extractor): the CNN then sees the same level whatever the recording gain."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)


def batch_seed(seed: int, position: int, what: str = "train") -> int:
    """A 63-bit seed for the masks of batch ``position`` (stable across runs and processes)."""
    return random.Random(f"seqformer.speech-ssl:{what}:{seed}:{position}").getrandbits(63)


def collate(examples: Sequence[Utterance], config: Wav2Vec2Config, generator: torch.Generator,
            mask: bool = True) -> WaveBatch:
    """Pad the waveforms; draw the span mask (and, for the contrastive objective, distractors
    among the masked frames of each utterance); pad the frame targets to the batch's frames."""
    lengths = torch.tensor([len(e.wave) for e in examples], dtype=torch.long)
    waves = torch.zeros(len(examples), int(lengths.max()))
    for i, e in enumerate(examples):
        waves[i, : len(e.wave)] = e.wave
    frames = frame_lengths(config, lengths)
    total = int(frame_lengths(config, lengths.max().view(1))[0])
    batch = WaveBatch(waves, lengths)
    if mask and config.mask_time_prob > 0:
        batch.mask_time = span_mask(frames, total, config.mask_time_prob,
                                    config.mask_time_length, generator)
        if config.objective in CONTRASTIVE_OBJECTIVES:
            batch.negatives = sample_negatives(batch.mask_time, config.num_negatives, generator)
    if examples[0].units is not None:
        units = torch.full((len(examples), total), -100, dtype=torch.long)
        for i, e in enumerate(examples):
            assert e.units is not None
            n = min(len(e.units), total)
            units[i, :n] = e.units[:n]
        batch.units = units
    if examples[0].targets is not None:
        width = examples[0].targets.shape[1]
        targets = torch.zeros(len(examples), total, width)
        for i, e in enumerate(examples):
            assert e.targets is not None
            n = min(len(e.targets), total)
            targets[i, :n] = e.targets[:n]
        batch.targets = targets
    return batch


class PretrainStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch; batch ``n``'s masks and distractors come
    from a generator seeded by (seed, n)."""

    def __init__(self, examples: Sequence[Utterance], batch_size: int, seed: int,
                 config: Wav2Vec2Config) -> None:
        super().__init__(examples, batch_size, seed)
        self.config = config

    def make_batch(self, examples: list[Utterance], position: int) -> WaveBatch:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, position))
        return collate(examples, self.config, generator)


def fixed_batches(examples: Sequence[Utterance], config: Wav2Vec2Config, seed: int
                  ) -> list[WaveBatch]:
    """Validation batches with masks fixed once, so validation losses compare over time."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].wave))
    out = []
    for start in range(0, len(order), EVAL_BATCH):
        chunk = [examples[i] for i in order[start:start + EVAL_BATCH]]
        generator = torch.Generator().manual_seed(batch_seed(seed, start, "valid"))
        out.append(collate(chunk, config, generator))
    return out


def validation(model: Wav2Vec2ForPreTraining, batches: Sequence[WaveBatch]) -> dict[str, float]:
    """The objective's loss and accuracy over the masked frames of the held-out audio (means
    weighted by the frames each batch scores)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    weight = 0
    with torch.no_grad():
        for batch in batches:
            out = model(batch.to(device))
            n = max(int(out.n_tokens), 0)
            if n == 0:
                continue
            weight += n
            totals["valid_loss"] = totals.get("valid_loss", 0.0) + float(out.loss) * n
            for key, value in out.metrics.items():
                totals[f"valid_{key}"] = totals.get(f"valid_{key}", 0.0) + float(value) * n
    model.train(was_training)
    return {k: v / max(weight, 1) for k, v in totals.items()}


def frame_features(waves: Sequence[np.ndarray], config: Wav2Vec2Config) -> list[Tensor]:
    """Frame targets of every utterance at the encoder's frame rate (MFCC + deltas for units,
    log-mel for reconstruction); the frame counts must be the encoder's, which holds for a
    feature encoder of receptive field 400 and stride 320 (wav2vec 2.0's)."""
    compute = mfcc_frames if config.objective == "units" else log_mel_frames
    out = []
    for i, wave in enumerate(waves):
        feats = compute(wave).float()
        expected = int(frame_lengths(config, torch.tensor([len(wave)]))[0])
        if feats.shape[0] != expected:
            raise ConfigError(f"model.conv_kernel/conv_stride: frame targets are frames of "
                              f"400 samples every 320, but this feature encoder gives "
                              f"{expected} frames for utterance {i + 1} (targets: "
                              f"{feats.shape[0]}); keep wav2vec 2.0's conv layout")
        out.append(feats)
    return out


@dataclass(frozen=True)
class UnitsSource:
    """Where HuBERT's second-iteration features come from: layer ``layer`` of the encoder of
    the run ``run`` (config ``config``; ``normalize``: whether that encoder reads normalised
    waveforms, as its ``features`` say)."""

    run: Path
    layer: int
    config: Wav2Vec2Config
    normalize: bool

    def describe(self) -> dict[str, Any]:
        """What ``units.json`` records of the source (the weights' digest: which training
        state of that run was clustered)."""
        from seqformer.training.checkpoint import file_sha256

        return {"features": f"hidden states after encoder layer {self.layer} of {self.run}",
                "from_run": str(self.run.resolve()), "layer": self.layer,
                "source_weights_sha256": file_sha256(self.run / "model.safetensors")}


def units_source(recipe: PretrainRecipe, config: Wav2Vec2Config) -> UnitsSource | None:
    """The encoder ``units.from_run`` names, checked against ``units.layer`` and the model
    being trained (same conv layout, so its frames are the new model's) before any audio is
    read; None for MFCC units."""
    units = recipe.units
    if units.from_run is None:
        return None
    run = Path(units.from_run)
    source = backbone_config(run)  # a one-line CheckpointError for a missing or other run
    layer = units.layer if units.layer is not None else max(1, source.layers // 2)
    if layer > source.layers:
        raise ConfigError(f"units.layer={layer}, but the encoder of units.from_run ({run}) has "
                          f"{source.layers} layers; use 1..{source.layers}")
    for name in ("conv_kernel", "conv_stride"):
        if getattr(source, name) != getattr(config, name):
            raise ConfigError(f"model.{name}={list(getattr(config, name))} differs from the "
                              f"{list(getattr(source, name))} of units.from_run ({run}); keep "
                              "its conv layout so its frames are the new model's")
    features = read_wav2vec2_config(run).get("features") or {}
    if int(features.get("sample_rate", 16000)) != 16000:
        raise ConfigError(f"units.from_run: {run} reads {features['sample_rate']} Hz audio; "
                          "the speech corpus is 16 kHz")
    return UnitsSource(run, layer, source, bool(features.get("normalize", True)))


@torch.no_grad()
def encoder_features(encoder: Wav2Vec2Model, waves: Sequence[Tensor], layer: int,
                     batch_size: int = EVAL_BATCH) -> list[Tensor]:
    """(frames, d_model) float32 CPU hidden states after encoder layer ``layer`` of every
    waveform (as the encoder reads them: normalised or not), in eval mode, without gradients,
    in padded batches of similar lengths; each utterance's frames are what it gives alone
    (the encoder is padding-invariant)."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out: list[Tensor] = [torch.empty(0)] * len(waves)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lengths = torch.tensor([len(waves[i]) for i in chunk], dtype=torch.long)
        batch = torch.zeros(len(chunk), int(lengths.max()))
        for j, i in enumerate(chunk):
            batch[j, : len(waves[i])] = waves[i]
        states, _, valid = encoder.hidden_states(batch.to(device), lengths.to(device),
                                                 upto=layer)
        hidden, frames = states[layer].float().cpu(), valid.sum(1).cpu()
        for j, i in enumerate(chunk):
            out[i] = hidden[j, : int(frames[j])].clone()
    encoder.train(was_training)
    return out


def source_features(source: UnitsSource, waves: dict[str, Sequence[np.ndarray]],
                    device: torch.device) -> dict[str, list[Tensor]]:
    """The second iteration's frame features of each split's waveforms."""
    encoder = load_backbone(Wav2Vec2Model(source.config), source.run).to(device)
    log(f"units: features of encoder layer {source.layer}/{source.config.layers} of "
        f"{source.run}")
    prepare = normalise if source.normalize else (
        lambda w: torch.as_tensor(np.asarray(w, dtype=np.float32)))
    return {name: encoder_features(encoder, [prepare(w) for w in split], source.layer)
            for name, split in waves.items()}


def fit_units(feats: list[Tensor], clusters: int, units: UnitsConfig,
              what: str = "MFCC frames", field: str = "model.num_units"
              ) -> tuple[KMeans, Tensor, Tensor]:
    """k-means over (at most ``units.max_frames``, drawn with ``units.seed``) standardised
    frame features (``what``) of the training audio; ``field`` names the cluster count in an
    error."""
    mean, std = fit_mean_std(feats)
    pool = torch.cat(feats)
    generator = torch.Generator().manual_seed(units.seed)
    if len(pool) > units.max_frames:
        pool = pool[torch.randperm(len(pool), generator=generator)[: units.max_frames]]
    if len(pool) < clusters:
        raise DataError(f"{field}={clusters} exceeds the {len(pool)} training frames; "
                        "use fewer units or more audio")
    log(f"units: k-means of {len(pool)} {what} into {clusters} units "
        f"({units.iterations} iterations)")
    kmeans = KMeans.fit((pool - mean) / std, clusters, units.iterations, units.seed)
    return kmeans, mean, std


def fit_front_end(encoder: Wav2Vec2Model, waves: Sequence[np.ndarray],
                  units: UnitsConfig) -> None:
    """Fit the unit front end of ``encoder`` (``model.frontend: units``) on ``waves`` (the
    training split) and install it. The features are those of the normalised waveforms,
    because that is what the model reads in training and inference: clustering the raw audio
    would put the centroids where the model's frames never are."""
    c = encoder.config
    feats = [unit_features(normalise(w), c.units_features, c.units_n_mfcc, c.units_n_mels)
             for w in waves]
    kmeans, mean, std = fit_units(feats, c.units_k, units,
                                  f"{c.units_features} frames (the unit front end)",
                                  "model.units_k")
    encoder.set_units(kmeans.centroids, mean, std)


def save_units(directory: Path, kmeans: KMeans, mean: Tensor, std: Tensor,
               source: dict[str, Any] | None = None) -> None:
    """The centroids and ``units.json``: what was clustered (``source``: the second
    iteration's :meth:`UnitsSource.describe`; MFCC frames without) and its standardisation."""
    from seqformer.training.checkpoint import atomic_write_text

    kmeans.save(directory / UNITS_FILE)
    what = source or {"features": MFCC_UNITS}
    atomic_write_text(directory / UNITS_STATS, json.dumps(
        {**what, "mean": mean.tolist(), "std": std.tolist()}) + "\n")


def load_units(directory: Path) -> tuple[KMeans, Tensor, Tensor]:
    """The k-means units a HuBERT run was trained on (to label new audio the same way: see
    :func:`units_record` for which features they cluster)."""
    stats = units_record(directory)
    return (KMeans.load(directory / UNITS_FILE), torch.tensor(stats["mean"]),
            torch.tensor(stats["std"]))


def units_record(directory: Path) -> dict[str, Any]:
    """``units.json`` of a HuBERT run: ``features`` (what was clustered; with ``from_run``,
    ``layer`` and ``source_weights_sha256`` for a second iteration), ``mean``, ``std``."""
    path = directory / UNITS_STATS
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


def check_resumed_units(directory: Path, now: dict[str, Any] | None) -> None:
    """On --resume, the saved units must cluster the features this recipe computes (``now``:
    :meth:`UnitsSource.describe`, None for MFCC frames)."""
    saved = units_record(directory)
    now = now or {}
    for key in ("from_run", "layer", "source_weights_sha256"):
        if saved.get(key) != now.get(key):
            raise ConfigError(f"units.from_run / units.layer: {directory / UNITS_STATS} "
                              f"records {key}={saved.get(key)!r}, this recipe gives "
                              f"{now.get(key)!r}; resume with the recipe the run started with")


def make_examples(data: SpokenSet, config: Wav2Vec2Config, units: tuple[KMeans, Tensor, Tensor]
                  | None, target_stats: tuple[Tensor, Tensor] | None,
                  feats: list[Tensor] | None) -> list[Utterance]:
    out = []
    for i, wave in enumerate(data.waveforms):
        example = Utterance(normalise(wave))
        if units is not None or target_stats is not None:
            assert feats is not None
            if units is not None:
                kmeans, mean, std = units
                example.units = kmeans.assign((feats[i] - mean) / std)
            else:
                assert target_stats is not None
                example.targets = (feats[i] - target_stats[0]) / target_stats[1]
        out.append(example)
    return out


def train_pretrain(recipe: PretrainRecipe, out_dir: str | Path, resume: bool = False
                   ) -> tuple[dict[str, Any], dict[str, float]]:
    """Pretrain into ``out_dir``; returns the trainer summary and the best checkpoint's
    validation metrics."""
    from seqformer.tasks.encoder import check_resumable
    from seqformer.tasks.speech import load_speech_splits

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    base = recipe.model_config()
    source = units_source(recipe, base)  # before the audio: a bad units.layer fails fast
    source_record = None if source is None else source.describe()
    # DiscreteBERT: the targets are the input's units, which the model computes itself.
    own_units = base.frontend == "units" and base.objective == "units" and source is None
    resumed_units = (resume and base.objective == "units" and not own_units
                     and (out / UNITS_FILE).is_file())
    if resumed_units:
        check_resumed_units(out, source_record)
    splits, split_fp = load_speech_splits(recipe)  # type: ignore[arg-type]
    train, valid = splits["train"], splits["valid"]
    assert train is not None and valid is not None
    needs_frames = base.objective in ("units", "reconstruct") and not own_units
    waves = {"train": train.waveforms, "valid": valid.waveforms}
    feats: dict[str, list[Tensor]] = {}
    if source is not None:
        feats = source_features(source, waves, resolve_device(recipe.train.device))
    elif needs_frames:
        feats = {name: frame_features(split, base) for name, split in waves.items()}
    units = target_stats = None
    target_dim = 0
    if base.objective == "units" and not own_units:
        if resumed_units:
            units = load_units(out)
        else:
            units = fit_units(feats["train"], base.num_units, recipe.units,
                              "MFCC frames" if source is None
                              else f"layer-{source.layer} frames")
    elif base.objective == "reconstruct":
        target_stats = fit_mean_std(feats["train"])
        target_dim = int(target_stats[0].numel())
    torch.manual_seed(recipe.train.seed)
    model = Wav2Vec2ForPreTraining(recipe.model_config(target_dim))
    c = model.config
    if c.frontend == "units" and not resume:  # resumed: the checkpoint holds the units
        fit_front_end(model.wav2vec2, train.waveforms, recipe.units)
    examples = {name: make_examples(data, c, units, target_stats, feats.get(name))
                for name, data in (("train", train), ("valid", valid))}
    seconds = sum(len(w) for w in train.waveforms) / 16000
    stream = PretrainStream(examples["train"], recipe.data.batch_size, recipe.train.seed, c)
    log(f"data: {len(train)} train / {len(valid)} valid utterances (split {split_fp}; "
        f"{seconds / 60:.1f} min of training audio, transcripts unused)")
    split = (f" (contrastive after layer {c.split_layer}, masked prediction at the top)"
             if c.objective == "w2v-bert" else "")
    front = (f"a unit front end ({c.units_k} k-means units of {c.units_features} frames"
             + (", the targets" if own_units else "") + "), " if c.frontend == "units" else "")
    log(f"model: wav2vec 2.0-shaped encoder, {front}objective {c.objective}{split}, "
        f"{model.num_parameters() / 1e6:.2f}M parameters, d_model {c.d_model}, {c.layers} "
        f"{c.encoder_block} layers; {stream.per_epoch} batches an epoch, "
        f"{recipe.train.max_steps} steps")
    valid_batches = fixed_batches(examples["valid"], c, recipe.train.seed)
    if c.objective in CONTRASTIVE_OBJECTIVES:
        # The Gumbel temperature anneals with the updates made; the stream's position counts
        # them (and is restored on --resume), so the schedule resumes exactly.
        model.register_forward_pre_hook(
            lambda m, args: m.set_gumbel_temperature(max(stream.position - 1, 0))
            if m.training else None)

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp}, model.config_json())
        if units is not None:
            save_units(directory, *units, source_record)

    save_run(out)
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: validation(m, valid_batches), on_save=save_run)
    summary = trainer.train(resume=resume)
    best: dict[str, float] = {}
    if not summary.get("interrupted"):
        best = validation(Wav2Vec2ForPreTraining.load(out, str(trainer.device)), valid_batches)
        (out / "valid_metrics.json").write_text(json.dumps(best, indent=2) + "\n",
                                                encoding="utf-8")
    return summary, best
