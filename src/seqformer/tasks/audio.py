"""Audio classification with the Audio Spectrogram Transformer (``task: audio-classify``).

The task owns what the trainer must not know: making or reading the clips and their split,
the label names, the filterbank front end (its mean/std fitted on the training split and saved
in ``config.json`` as ``features``), the validation metrics (loss, accuracy, macro-F1) and the
run directory (``config.json`` with ``family: ast``, ``recipe.yaml`` with the split
fingerprint, ``model.safetensors``). :class:`AudioClassifier` is the inference side:
``AudioClassifier.load(run).predict(waveforms or WAV paths)``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seqformer.data.fbank import Fbank
from seqformer.data.mlm import ExampleStream
from seqformer.data.speech import (
    ACCENTS,
    VARIANTS,
    WORDS,
    SpeechSet,
    holdout,
    read_clip_list,
    read_wav,
    speech_commands_splits,
)
from seqformer.errors import DataError
from seqformer.metrics.classification import accuracy, macro_f1
from seqformer.models.audio import AST, AudioBatch, read_ast_config
from seqformer.recipe_audio import AudioRecipe, audio_recipe_from_dict
from seqformer.tasks.rundir import log, write_run_metadata
from seqformer.training.trainer import Trainer

EVAL_BATCH = 128


def load_audio_splits(recipe: AudioRecipe) -> dict[str, SpeechSet | None]:
    """train / valid / test clips of the recipe (test may be None for files)."""
    d = recipe.data
    if d.corpus == "speech-commands":
        return dict(speech_commands_splits(
            d.words or WORDS, d.accents or ACCENTS, d.variants or VARIANTS, d.renditions,
            d.valid_variants, d.test_variants, d.split_seed, d.seed, d.clip_seconds,
            tuple(d.snr_db), d.shift, log=log))
    train = read_clip_list(d.train, "data.train")
    if d.valid:
        valid = read_clip_list(d.valid, "data.valid")
    else:
        train, valid = holdout(train, d.valid_fraction, d.split_seed)
    test = read_clip_list(d.test, "data.test") if d.test else None
    return {"train": train, "valid": valid, "test": test}


def label_ids(data: SpeechSet, labels: list[str], where: str) -> torch.Tensor:
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        raise DataError(f"{where}: label(s) {', '.join(unknown[:5])} do not occur in the "
                        f"training data (labels: {', '.join(labels)})")
    return torch.tensor([index[x] for x in data.labels], dtype=torch.long)


@torch.no_grad()
def predictions(model: AST, features: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[list[int], float]:
    """Predicted label indices of normalised ``features`` and (with ``labels``) the mean
    cross-entropy."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, preds = 0.0, []
    for i in range(0, len(features), EVAL_BATCH):
        gold = None if labels is None else labels[i:i + EVAL_BATCH]
        out = model(AudioBatch(features[i:i + EVAL_BATCH], gold).to(device))
        loss_sum += float(out.loss) * len(out.logits)
        preds.extend(out.logits.argmax(-1).cpu().tolist())
    model.train(was_training)
    return preds, loss_sum / max(len(preds), 1)


def audio_metrics(model: AST, features: torch.Tensor, labels: torch.Tensor,
                  prefix: str = "valid_") -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on normalised ``features``."""
    preds, loss = predictions(model, features, labels)
    gold = labels.tolist()
    metrics = {"loss": loss, "accuracy": accuracy(gold, preds),
               "macro_f1": macro_f1(gold, preds, range(model.config.num_labels))}
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def confusion_summary(gold: list[str], pred: list[str], top: int = 5) -> list[str]:
    """Lines for a person: the most frequent (true -> predicted) mistakes, and each class's
    recall from worst to best."""
    mistakes = Counter((g, p) for g, p in zip(gold, pred) if g != p)
    totals, hits = Counter(gold), Counter(g for g, p in zip(gold, pred) if g == p)
    lines = ["most confused: " + (", ".join(f"{g} -> {p} ({n})"
                                            for (g, p), n in mistakes.most_common(top))
                                  or "none")]
    recall = sorted(totals, key=lambda c: (hits[c] / totals[c], c))
    lines.append("recall by class: " + ", ".join(f"{c} {hits[c]}/{totals[c]}" for c in recall))
    return lines


def fingerprint(splits: dict[str, SpeechSet | None]) -> str:
    """sha256 of every split's audio, labels and sources: two runs with the same fingerprint
    saw the same clips in the same splits."""
    h = hashlib.sha256()
    for name, data in sorted(splits.items()):
        if data is not None:
            h.update(name.encode())
            for w in data.waveforms:
                h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
            h.update(json.dumps([data.labels, data.sources]).encode())
    return h.hexdigest()[:16]


class AudioStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (features, label index) examples."""

    def make_batch(self, examples: list[Any], position: int) -> AudioBatch:
        features = torch.stack([f for f, _ in examples])
        labels = torch.tensor([y for _, y in examples], dtype=torch.long)
        return AudioBatch(features, labels)


def train_audio_classifier(recipe: AudioRecipe, out_dir: str | Path, resume: bool = False
                           ) -> tuple[dict, dict[str, float]]:
    """Train an AST into ``out_dir``; returns the trainer summary and the test metrics (empty
    without a test split), which are also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    splits = load_audio_splits(recipe)
    train = splits["train"]
    assert train is not None
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        raise DataError(f"data.train: a single class ({labels[0]}); classification needs at "
                        "least two")
    torch.manual_seed(recipe.train.seed)
    model = AST(recipe.model_config(len(labels)), labels)
    c = model.config
    frontend = Fbank(num_mel_bins=c.num_mel_bins, max_frames=c.max_frames)
    raw = {name: frontend.raw(data.waveforms) for name, data in splits.items()
           if data is not None}
    frontend = frontend.fit(raw["train"])
    encoded = {name: (frontend.normalise(x), label_ids(splits[name], labels, f"data.{name}"))
               for name, x in raw.items()}
    features, ids = encoded["train"]
    stream = AudioStream(list(zip(features, ids.tolist())), recipe.data.batch_size,
                         recipe.train.seed)
    train_config = recipe.train.for_epochs(stream.per_epoch)
    frames = frontend.frames_for(int(np.median([w.size for w in train.waveforms])))
    log(f"model: AST {model.num_parameters() / 1e6:.2f}M parameters, {c.num_patches} patches "
        f"({c.grid[0]} x {c.grid[1]}) of {c.patch_size}x{c.patch_size} over {c.num_mel_bins} mel "
        f"x {c.max_frames} frames (median clip {frames}), {c.layers} layers, d_model "
        f"{c.d_model}; " + ", ".join(f"{len(v[1])} {k}" for k, v in encoded.items())
        + f" clips, {len(labels)} classes; {train_config.max_steps} steps")
    split = fingerprint(splits)

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split},
                           model.config_json(frontend.to_dict()))

    save_run(out)
    valid = encoded["valid"]
    trainer = Trainer(model, train_config, stream, out,
                      validate=lambda m: audio_metrics(m, *valid), on_save=save_run)
    summary = trainer.train(resume=resume)
    test_metrics: dict[str, float] = {}
    if "test" in encoded and not summary.get("interrupted"):
        best = AST.load(out, str(trainer.device))
        test_metrics = audio_metrics(best, *encoded["test"], prefix="test_")
        (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n",
                                               encoding="utf-8")
    return summary, test_metrics


class AudioClassifier:
    """A trained (or imported) AST with its filterbank front end and label names."""

    def __init__(self, model: AST, frontend: Fbank, recipe: AudioRecipe | None = None) -> None:
        self.model, self.frontend, self.recipe = model.eval(), frontend, recipe
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> AudioClassifier:
        run_dir = Path(run_dir)
        data = read_ast_config(run_dir)
        model = AST.load(run_dir, device)
        c = model.config
        frontend = Fbank.from_dict({**(data.get("features") or {}), "num_mel_bins":
                                    c.num_mel_bins, "max_frames": c.max_frames},
                                   f"{run_dir}/config.json")
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            recipe = audio_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                            str(path))
        return cls(model, frontend, recipe)

    @property
    def labels(self) -> list[str]:
        return self.model.labels or [str(i) for i in range(self.model.config.num_labels)]

    def waveforms(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> list[np.ndarray]:
        """Waveforms of ``clips``: float arrays (mono, the model's sample rate, in [-1, 1]) are
        taken as they are, paths are read as 16-bit PCM WAV files."""
        if isinstance(clips, np.ndarray) and clips.ndim == 1:
            clips = [clips]
        out = []
        for clip in clips:
            if isinstance(clip, str | Path):
                out.append(read_wav(clip))
            else:
                out.append(np.asarray(clip, dtype=np.float32).reshape(-1))
        return out

    @torch.no_grad()
    def logits(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> torch.Tensor:
        """(N, num_labels) logits of N clips (waveforms or WAV paths)."""
        features = self.frontend(self.waveforms(clips))
        parts = [self.model.logits(features[i:i + EVAL_BATCH].to(self.device)).float().cpu()
                 for i in range(0, len(features), EVAL_BATCH)]
        return torch.cat(parts) if parts else torch.zeros(0, self.model.config.num_labels)

    def predict(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> list[str]:
        """The label name of each clip."""
        return [self.labels[i] for i in self.logits(clips).argmax(-1).tolist()]

    def evaluate(self, data: SpeechSet, where: str = "--data"
                 ) -> tuple[dict[str, float], list[str]]:
        """(loss / accuracy / macro-F1, the predicted label of each clip) on labelled clips."""
        gold = label_ids(data, self.labels, where)
        features = self.frontend(data.waveforms)
        preds, loss = predictions(self.model, features, gold)
        metrics = {"loss": loss, "accuracy": accuracy(gold.tolist(), preds),
                   "macro_f1": macro_f1(gold.tolist(), preds,
                                        range(self.model.config.num_labels))}
        return metrics, [self.labels[i] for i in preds]

    def test_split(self) -> SpeechSet | None:
        """The test split of the run's recipe (None without one)."""
        if self.recipe is None:
            return None
        return load_audio_splits(self.recipe)["test"]


def describe(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
