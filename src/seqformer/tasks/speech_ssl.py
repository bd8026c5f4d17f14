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
  units cluster MFCC frames (``data/units.py``), fitted here on the training audio and saved
  with the run (``units.safetensors``, ``units.json``);
- ``reconstruct`` (Mockingjay-style, Liu et al. 2020): regress the standardised 40-band log-mel
  frame under the mask, an L1 loss. Mockingjay's input is that log-mel spectrogram; ours is the
  waveform, so the target is the log-mel frame aligned with each encoder frame.

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
from seqformer.data.units import KMeans, fit_mean_std, log_mel_frames, mfcc_frames
from seqformer.errors import ConfigError, DataError
from seqformer.models.wav2vec2 import (
    Wav2Vec2Config,
    Wav2Vec2ForPreTraining,
    WaveBatch,
    frame_lengths,
)
from seqformer.recipe_ssl import PretrainRecipe
from seqformer.tasks.rundir import log, write_run_metadata
from seqformer.training.trainer import Trainer

EVAL_BATCH = 64
UNITS_FILE = "units.safetensors"
UNITS_STATS = "units.json"


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
        if config.objective == "contrastive":
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


def fit_units(feats: list[Tensor], clusters: int, recipe: PretrainRecipe
              ) -> tuple[KMeans, Tensor, Tensor]:
    """k-means over (at most ``units.max_frames``, drawn with ``units.seed``) standardised
    MFCC frames of the training audio."""
    mean, std = fit_mean_std(feats)
    pool = torch.cat(feats)
    generator = torch.Generator().manual_seed(recipe.units.seed)
    if len(pool) > recipe.units.max_frames:
        pool = pool[torch.randperm(len(pool), generator=generator)[: recipe.units.max_frames]]
    if len(pool) < clusters:
        raise DataError(f"model.num_units={clusters} exceeds the {len(pool)} training frames; "
                        "use fewer units or more audio")
    log(f"units: k-means of {len(pool)} MFCC frames into {clusters} units "
        f"({recipe.units.iterations} iterations)")
    kmeans = KMeans.fit((pool - mean) / std, clusters, recipe.units.iterations,
                        recipe.units.seed)
    return kmeans, mean, std


def save_units(directory: Path, kmeans: KMeans, mean: Tensor, std: Tensor) -> None:
    from seqformer.training.checkpoint import atomic_write_text

    kmeans.save(directory / UNITS_FILE)
    atomic_write_text(directory / UNITS_STATS, json.dumps(
        {"features": "mfcc13+deltas, 400-sample windows every 320", "mean": mean.tolist(),
         "std": std.tolist()}) + "\n")


def load_units(directory: Path) -> tuple[KMeans, Tensor, Tensor]:
    """The k-means units a HuBERT run was trained on (to label new audio the same way)."""
    stats = json.loads((directory / UNITS_STATS).read_text(encoding="utf-8"))
    return (KMeans.load(directory / UNITS_FILE), torch.tensor(stats["mean"]),
            torch.tensor(stats["std"]))


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
    splits, split_fp = load_speech_splits(recipe)  # type: ignore[arg-type]
    train, valid = splits["train"], splits["valid"]
    assert train is not None and valid is not None
    base = recipe.model_config()
    needs_frames = base.objective in ("units", "reconstruct")
    feats = ({name: frame_features(data.waveforms, base)
              for name, data in (("train", train), ("valid", valid))} if needs_frames else {})
    units = target_stats = None
    target_dim = 0
    if base.objective == "units":
        units = (load_units(out) if resume and (out / UNITS_FILE).is_file()
                 else fit_units(feats["train"], base.num_units, recipe))
    elif base.objective == "reconstruct":
        target_stats = fit_mean_std(feats["train"])
        target_dim = int(target_stats[0].numel())
    torch.manual_seed(recipe.train.seed)
    model = Wav2Vec2ForPreTraining(recipe.model_config(target_dim))
    c = model.config
    examples = {name: make_examples(data, c, units, target_stats, feats.get(name))
                for name, data in (("train", train), ("valid", valid))}
    seconds = sum(len(w) for w in train.waveforms) / 16000
    stream = PretrainStream(examples["train"], recipe.data.batch_size, recipe.train.seed, c)
    log(f"data: {len(train)} train / {len(valid)} valid utterances (split {split_fp}; "
        f"{seconds / 60:.1f} min of training audio, transcripts unused)")
    log(f"model: wav2vec 2.0-shaped encoder, objective {c.objective}, "
        f"{model.num_parameters() / 1e6:.2f}M parameters, d_model {c.d_model}, {c.layers} "
        f"{c.encoder_block} layers; {stream.per_epoch} batches an epoch, "
        f"{recipe.train.max_steps} steps")
    valid_batches = fixed_batches(examples["valid"], c, recipe.train.seed)
    if c.objective == "contrastive":
        # The Gumbel temperature anneals with the updates made; the stream's position counts
        # them (and is restored on --resume), so the schedule resumes exactly.
        model.register_forward_pre_hook(
            lambda m, args: m.set_gumbel_temperature(max(stream.position - 1, 0))
            if m.training else None)

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp}, model.config_json())
        if units is not None:
            save_units(directory, *units)

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
