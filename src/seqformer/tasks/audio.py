"""Audio classification with the Audio Spectrogram Transformer (``task: audio-classify``).

The task owns what the trainer must not know: making or reading the clips and their split,
the label names, the filterbank front end (its mean/std fitted on the training split and saved
in ``config.json`` as ``features``), the validation metrics (loss, accuracy, macro-F1) and the
run directory (``config.json`` with ``family: ast``, ``recipe.yaml`` with the split
fingerprint, ``model.safetensors``). :class:`AudioClassifier` is the inference side:
``AudioClassifier.load(run).predict(waveforms or WAV paths)``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from seqformer.models.audio import AST, AudioBatch, read_ast_config
from seqformer.recipe_audio import AudioRecipe, audio_recipe_from_dict
from seqformer.tasks import classify
from seqformer.tasks.rundir import log, recipe_if_saved

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
    return classify.label_ids(data.labels, labels, where)


def audio_metrics(model: AST, features: torch.Tensor, labels: torch.Tensor,
                  prefix: str = "valid_") -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on normalised ``features``."""
    return classify.metrics(model, AudioBatch, features, labels, EVAL_BATCH, prefix)


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
    return classify.fingerprint(splits, lambda data: (
        *(np.ascontiguousarray(w, dtype=np.float32).tobytes() for w in data.waveforms),
        json.dumps([data.labels, data.sources]).encode()))


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
    classify.check_classes(labels)
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
    return classify.train_and_test(model, recipe, frontend.to_dict(), fingerprint(splits),
                                   stream, train_config, encoded, audio_metrics, out, resume)


class AudioClassifier(classify.Classifier):
    """A trained (or imported) AST with its filterbank front end and label names."""

    batch_size = EVAL_BATCH

    def __init__(self, model: AST, frontend: Fbank, recipe: AudioRecipe | None = None) -> None:
        super().__init__(model, recipe)
        self.frontend = frontend

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> AudioClassifier:
        run_dir = Path(run_dir)
        data = read_ast_config(run_dir)
        model = AST.load(run_dir, device)
        c = model.config
        frontend = Fbank.from_dict({**(data.get("features") or {}), "num_mel_bins":
                                    c.num_mel_bins, "max_frames": c.max_frames},
                                   f"{run_dir}/config.json")
        return cls(model, frontend, recipe_if_saved(run_dir, audio_recipe_from_dict))

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

    def inputs(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> torch.Tensor:
        """Normalised features of N clips (waveforms or WAV paths); ``logits`` / ``predict``
        take those."""
        return self.frontend(self.waveforms(clips))

    def evaluate(self, data: SpeechSet, where: str = "--data"
                 ) -> tuple[dict[str, float], list[str]]:
        """(loss / accuracy / macro-F1, the predicted label of each clip) on labelled clips."""
        gold = label_ids(data, self.labels, where)
        features = self.frontend(data.waveforms)
        preds, loss = classify.predictions(self.model, AudioBatch, features, gold, EVAL_BATCH)
        metrics = classify.scores(gold.tolist(), preds, loss, self.model.config.num_labels)
        return metrics, [self.labels[i] for i in preds]

    def test_split(self) -> SpeechSet | None:
        """The test split of the run's recipe (None without one)."""
        if self.recipe is None:
            return None
        return load_audio_splits(self.recipe)["test"]
