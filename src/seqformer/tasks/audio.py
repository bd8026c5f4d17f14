"""Audio classification (``task: audio-classify``) with the Audio Spectrogram Transformer
(``model.kind: ast``), a wav2vec 2.0 / HuBERT encoder (``kind: wav2vec2``) or an MLP on
openSMILE functionals (``kind: opensmile``), the hand-crafted baseline.

The task owns what the trainer must not know: making or reading the clips and their split,
the label names, the front end, the validation metrics (loss, accuracy, macro-F1) and the run
directory (``config.json`` with the family, ``recipe.yaml`` with the split fingerprint,
``model.safetensors``). The AST reads a filterbank (its mean/std fitted on the training split
and saved in ``config.json`` as ``features``; ``family: ast``). The wav2vec2 classifier
(``family: wav2vec2-classify``, HF ``Wav2Vec2ForSequenceClassification``) reads the raw
waveform normalised per clip (``tasks.speech_ssl.normalise``; ``features`` says so), clips
zero-padded to the batch's longest with their lengths; fine-tuned from ``init_from`` it starts
from that run's encoder, its CNN feature encoder frozen by default, and is trained with
wav2vec 2.0's time masking (``model.mask_time_prob``) -- so the same labelled clips show what
self-supervised pretraining buys. The openSMILE classifier (``family: smile-classify``)
reads one vector of functionals per clip (``data/smile.py``: eGeMAPSv02, GeMAPSv01b or
ComParE_2016, cached per clip), standardised by the training split's mean / std (saved in
``features``), on the same splits and the same Trainer path -- so its test accuracy is
directly comparable with the AST's and HuBERT's.

:class:`AudioClassifier` is the inference side: ``AudioClassifier.load(run)`` -- a
:class:`WaveClassifier` for a wav2vec2 run, a :class:`SmileAudioClassifier` for an openSMILE
one -- ``.predict(waveforms or WAV paths)``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqformer.data import smile, speech
from seqformer.data.fbank import Fbank
from seqformer.data.masking import span_mask
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
from seqformer.errors import CheckpointError, DataError
from seqformer.models.audio import AST, AudioBatch, read_ast_config
from seqformer.models.smile import FAMILY as FAMILY_SMILE
from seqformer.models.smile import SmileClassifier, SmileClassifierConfig
from seqformer.models.wav2vec2 import (
    FAMILY_CLASSIFY,
    Wav2Vec2Config,
    Wav2Vec2ForClassification,
    WaveBatch,
    backbone_config,
    frame_lengths,
    read_wav2vec2_config,
)
from seqformer.recipe_audio import AudioRecipe, audio_recipe_from_dict
from seqformer.tasks import classify
from seqformer.tasks.rundir import log, recipe_if_saved
from seqformer.tasks.speech_ssl import batch_seed, normalise

EVAL_BATCH = 128
# Parameter names of the wav2vec2 CNN feature encoder (``freeze: feature-encoder``).
FEATURE_ENCODER = ["wav2vec2.feature_extractor.*"]
# config.json ``features`` of a wav2vec2 classifier: what HF's Wav2Vec2FeatureExtractor does.
WAVE_FEATURES = {"sample_rate": speech.SAMPLE_RATE, "normalize": True}


def voice_sex(voice: str) -> str:
    """``male`` or ``female``: espeak-ng's voice variants are m1..m7 and f1..f5."""
    return "female" if voice.rsplit("+", 1)[-1].startswith("f") else "male"


def load_audio_splits(recipe: AudioRecipe) -> dict[str, SpeechSet | None]:
    """train / valid / test clips of the recipe (test may be None for files), labelled by
    ``data.label`` (the word, the voice variant's sex, or the voice's accent)."""
    d = recipe.data
    if d.corpus == "speech-commands":
        splits = speech_commands_splits(
            d.words or WORDS, d.accents or ACCENTS, d.variants or VARIANTS, d.renditions,
            d.valid_variants, d.test_variants, d.split_seed, d.seed, d.clip_seconds,
            tuple(d.snr_db), d.shift, log=log)
        if d.label == "voice-sex":  # both sexes in every split: checked by the recipe
            for data in splits.values():
                data.labels = [voice_sex(v) for v in data.speakers]
        elif d.label == "accent":  # every accent is in every split (held out by variant)
            for data in splits.values():
                data.labels = [v.split("+", 1)[0] for v in data.speakers]
        return dict(splits)
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
    """Train an AST, a wav2vec2 or an openSMILE classifier (``model.kind``) into ``out_dir``;
    returns the trainer summary and the test metrics (empty without a test split), which are
    also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    if recipe.kind == "wav2vec2":
        return train_wave_classifier(recipe, out, resume)
    if recipe.kind == "opensmile":
        return train_smile_classifier(recipe, out, resume)
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


# -- openSMILE functionals -----------------------------------------------------------------------


def train_smile_classifier(recipe: AudioRecipe, out: Path, resume: bool
                           ) -> tuple[dict, dict[str, float]]:
    """``train_audio_classifier`` for ``model.kind: opensmile``: functionals of every split
    (cached), z-scored by the training split's stats, then the AST's Trainer path."""
    smile.require_opensmile()  # before any audio is made: a missing package fails in a second
    splits = load_audio_splits(recipe)
    train = splits["train"]
    assert train is not None
    labels = sorted(set(train.labels))
    classify.check_classes(labels)
    torch.manual_seed(recipe.train.seed)
    config = recipe.model_config(len(labels))
    assert isinstance(config, SmileClassifierConfig)
    model = SmileClassifier(config, labels)
    raw = {name: smile.extract(data.waveforms, config.feature_set, log=log,
                               sources=data.sources)
           for name, data in splits.items() if data is not None}
    scaler = smile.Standardiser.fit(raw["train"])
    encoded = {name: (scaler(x), label_ids(splits[name], labels, f"data.{name}"))
               for name, x in raw.items()}
    features, ids = encoded["train"]
    stream = AudioStream(list(zip(features, ids.tolist())), recipe.data.batch_size,
                         recipe.train.seed)
    train_config = recipe.train.for_epochs(stream.per_epoch)
    shape = " x ".join(str(h) for h in config.hidden_sizes) or "none (logistic regression)"
    log(f"model: openSMILE {config.feature_set} functionals ({config.num_features} per clip, "
        f"opensmile {smile.opensmile_version()}) -> MLP, hidden {shape}, "
        f"{model.num_parameters() / 1e3:.1f}k parameters; "
        + ", ".join(f"{len(v[1])} {k}" for k, v in encoded.items())
        + f" clips, {len(labels)} classes; {train_config.max_steps} steps")
    return classify.train_and_test(model, recipe,
                                   {**smile.settings(config.feature_set), **scaler.to_dict()},
                                   fingerprint(splits), stream, train_config, encoded,
                                   audio_metrics, out, resume)


# -- wav2vec 2.0 / HuBERT classifier ------------------------------------------------------------

WaveExample = tuple[torch.Tensor, int]


def wave_batch(waves: list[torch.Tensor], labels: torch.Tensor | None = None) -> WaveBatch:
    """(Normalised) waveforms zero-padded to the longest, with their lengths and labels."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    padded = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    return WaveBatch(padded, lengths, labels=labels)


def wave_metrics(model: Wav2Vec2ForClassification, waves: list[torch.Tensor],
                 labels: torch.Tensor, prefix: str = "valid_") -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on normalised waveforms."""
    return classify.metrics(model, wave_batch, waves, labels, EVAL_BATCH, prefix)


class WaveStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (waveform, label index) examples and,
    with ``mask_time_prob`` > 0, a span mask over the frames seeded by the batch's position
    (so ``--resume`` repeats it)."""

    def __init__(self, examples: list[WaveExample], batch_size: int, seed: int,
                 config: Wav2Vec2Config) -> None:
        super().__init__(examples, batch_size, seed)
        self.config = config

    def make_batch(self, examples: list[WaveExample], position: int) -> WaveBatch:
        c = self.config
        batch = wave_batch([w for w, _ in examples],
                           torch.tensor([y for _, y in examples], dtype=torch.long))
        if c.mask_time_prob > 0:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, position,
                                                                 "audio-classify"))
            total = int(frame_lengths(c, batch.lengths.max().view(1))[0])
            batch.mask_time = span_mask(frame_lengths(c, batch.lengths), total,
                                        c.mask_time_prob, c.mask_time_length, generator,
                                        min_masks=0)
        return batch


def check_wave_lengths(sizes: list[int], sources: list[str], config: Wav2Vec2Config,
                       where: str) -> None:
    """Every clip (``sizes`` samples) must give the encoder at least one frame."""
    for i, size in enumerate(sizes):
        if size < config.receptive_field:
            source = sources[i] if sources else f"clip {i + 1}"
            raise DataError(f"{where}: {source}: {size} samples, shorter than the wav2vec2 "
                            f"encoder's receptive field ({config.receptive_field} samples)")


def build_wave_classifier(recipe: AudioRecipe, labels: list[str]
                          ) -> Wav2Vec2ForClassification:
    """The encoder of ``init_from`` (its shape and weights) under a fresh head, or a fresh
    encoder of the recipe's shape."""
    from seqformer.config import to_dict

    base = None
    if recipe.init_from is not None:
        base = to_dict(backbone_config(recipe.init_from))
    config = recipe.model_config(len(labels), base)
    assert isinstance(config, Wav2Vec2Config)
    model = Wav2Vec2ForClassification(config, labels)
    if recipe.init_from is not None:
        model.load_backbone(recipe.init_from)
    return model


def train_wave_classifier(recipe: AudioRecipe, out: Path, resume: bool
                          ) -> tuple[dict, dict[str, float]]:
    """``train_audio_classifier`` for ``model.kind: wav2vec2``."""
    import dataclasses

    if recipe.init_from is not None:
        # Before any audio is made: a wrong init_from should fail in a second.
        try:
            backbone_config(recipe.init_from)
        except CheckpointError as exc:
            raise CheckpointError(f"init_from: {exc}") from None
    splits = load_audio_splits(recipe)
    train = splits["train"]
    assert train is not None
    labels = sorted(set(train.labels))
    classify.check_classes(labels)
    torch.manual_seed(recipe.train.seed)
    model = build_wave_classifier(recipe, labels)
    c = model.config
    encoded: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}
    for name, data in splits.items():
        if data is not None:
            check_wave_lengths([w.size for w in data.waveforms], data.sources, c,
                               f"data.{name}")
            encoded[name] = ([normalise(w) for w in data.waveforms],
                             label_ids(data, labels, f"data.{name}"))
    waves, ids = encoded["train"]
    stream = WaveStream(list(zip(waves, ids.tolist())), recipe.data.batch_size,
                        recipe.train.seed, c)
    train_config = recipe.train.for_epochs(stream.per_epoch)
    if recipe.freeze_preset == "feature-encoder":
        train_config = dataclasses.replace(train_config,
                                           freeze=[*train_config.freeze, *FEATURE_ENCODER])
    median = int(np.median([w.size for w in train.waveforms]))
    frames = int(frame_lengths(c, torch.tensor([median]))[0])
    log(f"model: wav2vec 2.0 classifier, {model.num_parameters() / 1e6:.2f}M parameters, "
        f"{c.layers} {c.encoder_block} layers, d_model {c.d_model}, "
        + (f"encoder from {recipe.init_from}" if recipe.init_from else "from scratch")
        + f", freeze {recipe.freeze_preset}, mask_time_prob {c.mask_time_prob}; raw waveform "
        f"(median clip {median / speech.SAMPLE_RATE:.2f} s, {frames} frames); "
        + ", ".join(f"{len(v[1])} {k}" for k, v in encoded.items())
        + f" clips, {len(labels)} classes; {train_config.max_steps} steps")
    return classify.train_and_test(model, recipe, dict(WAVE_FEATURES), fingerprint(splits),
                                   stream, train_config, encoded, wave_metrics, out, resume)


class AudioClassifier(classify.Classifier):
    """A trained (or imported) AST with its filterbank front end and label names."""

    batch_size = EVAL_BATCH
    data_file = "FILE.tsv"

    def __init__(self, model: AST, frontend: Fbank, recipe: AudioRecipe | None = None) -> None:
        super().__init__(model, recipe)
        self.frontend = frontend

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> AudioClassifier:
        """The run's classifier: this class for an AST, a :class:`WaveClassifier` for a
        ``wav2vec2-classify`` run (the one place the audio families are told apart)."""
        from seqformer.models.seq2seq import read_model_config

        run_dir = Path(run_dir)
        family = read_model_config(run_dir).get("family")
        if family == FAMILY_CLASSIFY:
            return WaveClassifier.load(run_dir, device)
        if family == FAMILY_SMILE:
            return SmileAudioClassifier.load(run_dir, device)
        data = read_ast_config(run_dir)
        model = AST.load(run_dir, device)
        c = model.config
        frontend = Fbank.from_dict({**(data.get("features") or {}), "num_mel_bins":
                                    c.num_mel_bins, "max_frames": c.max_frames},
                                   f"{run_dir}/config.json")
        classifier = cls(model, frontend, recipe_if_saved(run_dir, audio_recipe_from_dict))
        classifier.run_dir = run_dir
        return classifier

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
        features = self.inputs(data.waveforms)
        preds, loss = classify.predictions(self.model, AudioBatch, features, gold, EVAL_BATCH)
        metrics = classify.scores(gold.tolist(), preds, loss, self.model.config.num_labels)
        return metrics, [self.labels[i] for i in preds]

    def load_splits(self, recipe: AudioRecipe) -> dict[str, SpeechSet | None]:
        return load_audio_splits(recipe)

    def split_fingerprint(self, splits: dict[str, SpeechSet | None]) -> str:
        return fingerprint(splits)


class WaveClassifier(AudioClassifier):
    """A trained (or imported) wav2vec2-family classifier: raw waveforms, normalised per clip
    unless its ``features`` say otherwise (an imported model with ``do_normalize`` false)."""

    def __init__(self, model: Wav2Vec2ForClassification, normalize: bool = True,
                 recipe: AudioRecipe | None = None) -> None:
        classify.Classifier.__init__(self, model, recipe)
        self.frontend = None  # type: ignore[assignment]  # the raw waveform is the input
        self.normalize = normalize

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> WaveClassifier:
        run_dir = Path(run_dir)
        features = read_wav2vec2_config(run_dir, FAMILY_CLASSIFY).get("features") or {}
        rate = int(features.get("sample_rate", speech.SAMPLE_RATE))
        if rate != speech.SAMPLE_RATE:
            raise CheckpointError(f"{run_dir}/config.json: features.sample_rate={rate}; audio "
                                  f"is read at {speech.SAMPLE_RATE} Hz")
        model = Wav2Vec2ForClassification.load(run_dir, device)
        classifier = cls(model, bool(features.get("normalize", True)),
                         recipe_if_saved(run_dir, audio_recipe_from_dict))
        classifier.run_dir = run_dir
        return classifier

    def prepare(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        return [normalise(w) if self.normalize
                else torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waves]

    def inputs(self, clips: list[np.ndarray | str | Path] | np.ndarray  # type: ignore[override]
               ) -> list[torch.Tensor]:
        """The model's input waveforms of N clips (waveforms or WAV paths), unpadded."""
        return self.prepare(self.waveforms(clips))

    @torch.no_grad()
    def logits(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> torch.Tensor:
        waves, n = self.inputs(clips), self.batch_size
        check_wave_lengths([len(w) for w in waves], [], self.model.config, "input")
        parts = []
        for i in range(0, len(waves), n):
            batch = wave_batch(waves[i:i + n]).to(self.device)
            parts.append(self.model.logits(batch.waves, batch.lengths).float().cpu())
        return torch.cat(parts) if parts else torch.zeros(0, self.model.config.num_labels)

    def evaluate(self, data: SpeechSet, where: str = "--data"
                 ) -> tuple[dict[str, float], list[str]]:
        gold = label_ids(data, self.labels, where)
        check_wave_lengths([w.size for w in data.waveforms], data.sources, self.model.config,
                           where)
        preds, loss = classify.predictions(self.model, wave_batch, self.prepare(data.waveforms),
                                           gold, EVAL_BATCH)
        metrics = classify.scores(gold.tolist(), preds, loss, self.model.config.num_labels)
        return metrics, [self.labels[i] for i in preds]


class SmileAudioClassifier(AudioClassifier):
    """A trained openSMILE classifier: functionals of each clip (the run's feature set,
    through the same per-clip cache as training) z-scored by the saved training stats."""

    def __init__(self, model: SmileClassifier, scaler: smile.Standardiser,
                 recipe: AudioRecipe | None = None) -> None:
        classify.Classifier.__init__(self, model, recipe)
        self.frontend = None  # type: ignore[assignment]  # openSMILE is the front end
        self.scaler = scaler

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> SmileAudioClassifier:
        run_dir = Path(run_dir)
        smile.require_opensmile()
        where = f"{run_dir}/config.json"
        features = SmileClassifier.read_config(run_dir).get("features") or {}
        rate = int(features.get("sample_rate", speech.SAMPLE_RATE))
        if rate != speech.SAMPLE_RATE:
            raise CheckpointError(f"{where}: features.sample_rate={rate}; audio is read at "
                                  f"{speech.SAMPLE_RATE} Hz")
        model = SmileClassifier.load(run_dir, device)
        scaler = smile.Standardiser.from_dict(features, model.config.num_features, where)
        classifier = cls(model, scaler, recipe_if_saved(run_dir, audio_recipe_from_dict))
        classifier.run_dir = run_dir
        return classifier

    def inputs(self, clips: list[np.ndarray | str | Path] | np.ndarray) -> torch.Tensor:
        """Standardised functionals (N, num_features) of N clips (waveforms or WAV paths)."""
        return self.scaler(smile.extract(self.waveforms(clips), self.model.config.feature_set))
