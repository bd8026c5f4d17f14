"""Speech to text with the Whisper-shaped model (``task: speech-to-text``).

The task owns what the trainer must not know: making or reading the utterances, the log-mel
features (``data/logmel.py``, settings saved as ``features`` in ``config.json``), the character
tokenizer of the transcripts, validation (loss, and CER/WER of greedy decodings) and the run
directory (``config.json`` with ``family: whisper``, ``recipe.yaml`` with the split
fingerprint, ``tokenizer/``, ``model.safetensors``). :class:`Transcriber` is the inference side:
``Transcriber.load(run).transcribe(["a.wav", waveform, ...])``.

Metrics (``metrics/edit.py``): CER = character edit distance / reference characters; WER =
word edit distance / reference words (speech recognition's WER, which for one-word utterances
is the share of wrong words, insertions counted); both in percent. With ``data.target:
phonemes`` the texts are espeak-ng phoneme strings: CER is a phoneme-character error rate and
WER the share of words with any phoneme error.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seqformer.data.logmel import LogMel, pad_features
from seqformer.data.mlm import ExampleStream
from seqformer.data.spoken_words import (
    SpokenSet,
    homophones,
    load_spoken_words,
    prepare,
    read_transcript_splits,
    read_transcripts,
)
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.decoding.processors import ForcedPrefixes, SuppressAtStep, SuppressTokens
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.errors import ConfigError, DataError
from seqformer.interop.hf_whisper import WhisperPrompt
from seqformer.metrics.edit import char_error_rate, error_rates
from seqformer.models.whisper import (
    GENERATION_KEY,
    SpeechBatch,
    Whisper,
    read_whisper_config,
    with_lengths,
    with_memory,
)
from seqformer.recipe import DecodeConfig
from seqformer.recipe_speech import SpeechRecipe, speech_recipe_from_dict
from seqformer.tasks.rundir import check_same_split, check_vocabulary, log, write_run_metadata
from seqformer.training.trainer import Trainer

DECODE_BATCH = 64
WINDOW_BATCH = 8  # utterances per decoding batch of an imported Whisper (3000 frames each)

Example = tuple[torch.Tensor, list[int]]


def load_speech_splits(recipe: SpeechRecipe) -> tuple[dict[str, SpokenSet | None], str]:
    """train / valid / test utterances of the recipe (test may be None for files) and a
    fingerprint of the split, with ``data.train_utterances`` applied."""
    splits, fingerprint = _all_splits(recipe)
    n = recipe.data.train_utterances
    train = splits["train"]
    assert train is not None
    if 0 < n < len(train):
        keep = sorted(random.Random(f"seqformer.train-subset:{recipe.data.split_seed}")
                      .sample(range(len(train)), n))
        splits["train"] = train.subset(keep)
        fingerprint = hashlib.sha256(f"{fingerprint}:{n}".encode()).hexdigest()[:16]
    return splits, fingerprint


def _all_splits(recipe: SpeechRecipe) -> tuple[dict[str, SpokenSet | None], str]:
    d = recipe.data
    if d.corpus == "spoken-words":
        splits, fingerprint = load_spoken_words(
            d.max_words, d.min_letters, d.max_letters, d.accents, d.voices_per_word,
            d.valid_variants, d.test_variants, d.split_seed, d.espeak, log, d.target)
        return dict(splits), fingerprint
    assert d.train is not None  # the recipe requires it with corpus: files
    return read_transcript_splits(d.train, d.valid, d.test, d.valid_fraction)


def featurize(data: SpokenSet, features: LogMel, model: Whisper | None = None,
              where: str = "data") -> list[torch.Tensor]:
    """Log-mel features of every utterance, checked against what the model can take."""
    out = []
    for i, wave in enumerate(data.waveforms):
        source = data.sources[i] if data.sources else f"{where} utterance {i + 1}"
        feats = features(wave, source)
        if model is not None and feats.shape[1] > model.config.max_frames:
            if features.pad_to_frames:
                seconds = feats.shape[1] * features.hop_length / features.sample_rate
                raise DataError(f"{source}: {seconds:.1f} s of audio; an "
                                f"imported Whisper takes at most {model.config.max_frames} "
                                "frames (its 30 s window): cut the audio into pieces "
                                "(seqformer transcribe splits it at pauses)")
            raise DataError(f"{source}: {feats.shape[1]} frames "
                            f"({feats.shape[1] / 100:.1f} s) exceed the model's "
                            f"{model.config.max_frames}; cut the audio (seqformer transcribe "
                            "splits it at pauses) or raise "
                            "model.max_source_positions")
        out.append(feats)
    return out


def encode_texts(data: SpokenSet, tokenizer: Tokenizer, max_tokens: int, where: str
                 ) -> list[list[int]]:
    ids = []
    for i, text in enumerate(data.texts):
        row = tokenizer.encode(text)
        if len(row) > max_tokens:
            source = data.sources[i] if data.sources else f"utterance {i + 1}"
            raise DataError(f"{where}: {source}: transcript of {len(row)} tokens exceeds "
                            f"{max_tokens} (model.max_target_positions - 2)")
        ids.append(row)
    return ids


def collate(examples: Sequence[Example], pad_id: int = 0, bos_id: int = 1, eos_id: int = 2
            ) -> SpeechBatch:
    features, lengths = pad_features([f for f, _ in examples])
    width = max(len(y) for _, y in examples) + 1
    tgt_in = torch.full((len(examples), width), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(examples), width), pad_id, dtype=torch.long)
    for i, (_, y) in enumerate(examples):
        tgt_in[i, : len(y) + 1] = torch.tensor([bos_id, *y])
        tgt_out[i, : len(y) + 1] = torch.tensor([*y, eos_id])
    return SpeechBatch(features, lengths, tgt_in, tgt_out, pad_id)


class SpeechStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (features, target ids) examples."""

    def make_batch(self, examples: list[Example], position: int) -> SpeechBatch:
        return collate(examples)


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """CER and WER (word edit distance over reference words) in percent, and ``n``."""
    return {"cer": char_error_rate(hypotheses, references),
            "wer": error_rates(hypotheses, references)["per"], "n": float(len(hypotheses))}


def in_length_batches(lengths: Sequence[int], decode: Callable[[list[int]], list[list[int]]],
                      batch_size: int = DECODE_BATCH) -> list[list[int]]:
    """``decode`` chunks of utterance indices of similar length (little padding), the outputs
    put back in input order: how both speech families decode many utterances."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = [[] for _ in lengths]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, tokens in zip(chunk, decode(chunk)):
            out[i] = tokens
    return out


@torch.no_grad()
def decode_features(model: Whisper, feats: list[torch.Tensor], beam: int = 1,
                    alpha: float = 0.0, penalty: str = "gnmt", max_length: int | None = None,
                    prompt: WhisperPrompt | None = None, language: str | None = None,
                    task: str | None = None) -> list[list[int]]:
    """Output ids (without bos/eos) of every utterance, in batches of similar length.

    ``max_length`` is passed explicitly: search.py's default counts non-zero source ids, which
    means nothing for features; the model's own bound is max_target_positions - 1.

    With ``prompt`` (an imported Whisper, see ``interop/hf_whisper.py``) the prompt after the
    start token is forced as the first outputs, per utterance when its language is detected
    (one probe step over the same encoder output), the checkpoint's suppressed tokens are
    masked after it, and the returned ids are what follows the prompt (specials included;
    ``max_length`` then counts those, not the prompt)."""
    device = next(model.parameters()).device
    bound_max = model.config.max_target_positions - 1
    template = prompt.template(language, task) if prompt is not None else [model.bos_id]
    forced = len(template) - 1
    limit = min(max_length + forced if max_length else bound_max, bound_max)

    def decode(chunk: list[int]) -> list[list[int]]:
        features, lengths = pad_features([feats[i] for i in chunk])
        features = features.to(device)
        if prompt is None:
            bound = with_lengths(model, lengths.to(device))
            if beam <= 1:
                return [h.tokens for h in greedy_search(bound, features, limit)]
            return [b[0].tokens for b in beam_search(bound, features, beam, limit,
                                                     alpha, penalty)]
        memory, mask = model.encode(features, lengths.to(device))
        rows = [list(template[1:])] * len(chunk)
        if None in template:  # HF's detection: the likeliest language token after the start
            log_probs, _ = model.step(torch.full((len(chunk),), model.bos_id, device=device),
                                      model.fresh_state(memory, mask))
            candidates = torch.tensor(prompt.language_ids, device=device)
            detected = candidates[log_probs[:, candidates].argmax(-1)].tolist()
            rows = [[lang if t is None else t for t in template[1:]] for lang in detected]
        processors = [ForcedPrefixes(rows, max(beam, 1)),
                      SuppressTokens(prompt.suppress, forced),
                      SuppressAtStep(prompt.begin_suppress, forced)]
        encoded = with_memory(model, memory, mask)
        if beam <= 1:
            hyps = [h.tokens for h in greedy_search(encoded, features, limit, processors)]
        else:
            hyps = [b[0].tokens for b in beam_search(encoded, features, beam, limit, alpha,
                                                     penalty, processors=processors)]
        return [h[forced:] for h in hyps]

    # 30 s windows are 10-100x our words' frames: smaller batches keep memory bounded.
    size = DECODE_BATCH if prompt is None else WINDOW_BATCH
    return in_length_batches([f.shape[1] for f in feats], decode, size)


def validation(model: Whisper, valid: list[Example], decode: list[Example],
               tokenizer: Tokenizer) -> dict[str, float]:
    """Mean loss / NLL per target token over ``valid``; CER / WER of greedy decodings of
    ``decode``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss = nll = tokens = 0.0
    with torch.no_grad():
        for i in range(0, len(valid), DECODE_BATCH):
            out = model(collate(valid[i:i + DECODE_BATCH]).to(device))
            loss += float(out.loss) * out.n_tokens
            nll += float(out.nll) * out.n_tokens
            tokens += out.n_tokens
    metrics = {"valid_loss": loss / max(tokens, 1), "valid_nll": nll / max(tokens, 1)}
    if decode:
        ids = decode_features(model, [f for f, _ in decode])
        hyps = [tokenizer.decode(x) for x in ids]
        refs = [tokenizer.decode(y) for _, y in decode]
        metrics.update({k: v for k, v in scores(hyps, refs).items() if k != "n"})
    model.train(was_training)
    return metrics


def train_speech(recipe: SpeechRecipe, out_dir: str | Path, resume: bool = False
                 ) -> tuple[dict, dict[str, dict[str, float]]]:
    """Train into ``out_dir``; returns the trainer summary and test metrics of the best
    checkpoint for greedy and for ``decode.beam`` (empty without a test split), also written
    to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    splits, split_fp = load_speech_splits(recipe)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert train is not None and valid is not None
    log_splits(recipe, splits, split_fp)
    tokenizer = (load_tokenizer(out / "tokenizer") if resume
                 else train_tokenizer("char", train.texts))
    torch.manual_seed(recipe.train.seed)
    model = Whisper(recipe.model_config(tokenizer.vocab_size))
    features = LogMel(n_mels=recipe.data.n_mels)
    max_tokens = model.config.max_target_positions - 2

    def examples(data: SpokenSet, name: str) -> list[Example]:
        feats = featurize(data, features, model, f"data.{name}")
        return list(zip(feats, encode_texts(data, tokenizer, max_tokens, f"data.{name}")))

    encoded = {name: examples(data, name) for name, data in splits.items() if data is not None}
    c = model.config
    frames = [f.shape[1] for f, _ in encoded["train"]]
    stream = SpeechStream(encoded["train"], recipe.data.batch_size, recipe.train.seed)
    log(f"model: Whisper {model.num_parameters() / 1e6:.2f}M parameters, d_model {c.d_model}, "
        f"{c.encoder_layers}+{c.decoder_layers} layers, vocab {tokenizer.vocab_size}; "
        f"{len(frames)} training utterances of {min(frames)}-{max(frames)} frames "
        f"(mean {np.mean(frames):.0f}), {stream.per_epoch} batches an epoch, "
        f"{recipe.train.max_steps} steps")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json(features.to_dict()))

    if not resume:
        tokenizer.save(out / "tokenizer")
    save_run(out)
    to_decode = encoded["valid"][: recipe.data.valid_decode]
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: validation(m, encoded["valid"], to_decode, tokenizer),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, dict[str, float]] = {}
    if test is not None and not summary.get("interrupted"):
        results = score_test(Transcriber.load(out, str(trainer.device)), test,
                             recipe.decode.beam, out)
    return summary, results


def log_splits(recipe: Any, splits: dict[str, SpokenSet | None], split_fp: str) -> None:
    """The split sizes and, for spoken-words, what makes its test hard (homophones) or what
    its phoneme targets look like: the line both speech families print before training."""
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    if recipe.data.corpus != "spoken-words" or test is None:
        return
    assert train is not None and valid is not None
    test_words = sorted({u.split("/")[1] for u in test.sources})
    note = (f"{homophones(test_words)} of {len(test_words)} test words have a CMUdict "
            "homophone (scored as errors)" if recipe.data.target == "spelling" else
            f"target: espeak-ng phonemes of {len(test_words)} test words, e.g. "
            f"{test.sources[0].split('/')[1]} -> {test.texts[0]}")
    log(f"data: {len(train)} train / {len(valid)} valid / {len(test)} test utterances "
        f"(split {split_fp}); {note}")


def score_test(best: SpeechRun, test: SpokenSet, beam: int, out: Path
               ) -> dict[str, dict[str, float]]:
    """Test CER / WER of a run's best checkpoint, greedy and (``beam`` > 1) with the beam,
    also written to ``out/test_metrics.json``."""
    results = {"greedy": best.evaluate(test, beam=1)}
    if beam > 1:
        results[f"beam{beam}"] = best.evaluate(test, beam=beam)
    (out / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n",
                                           encoding="utf-8")
    return results


class SpeechRun:
    """What the inference sides of both speech-to-text families share (:class:`Transcriber`,
    ``tasks.speech_ctc.CTCTranscriber``): scoring labelled utterances and re-making the
    recipe's test split. Subclasses say how a :class:`SpokenSet` becomes transcripts."""

    recipe: Any = None
    run_dir: Path | None = None
    last_hypotheses: list[str]

    def _transcripts(self, data: SpokenSet, beam: int | None, alpha: float | None
                     ) -> list[str]:
        raise NotImplementedError

    @property
    def levels_input(self) -> bool:
        """Does the model expect trimmed, peak-levelled audio (our runs, trained on it) rather
        than the raw clip (an imported checkpoint, run as transformers runs it)?"""
        return True

    def read_transcripts(self, path: str | Path, field_name: str = "--data") -> SpokenSet:
        """``evaluate --data FILE.tsv`` of this model: the clips levelled only when the model
        expects it (:attr:`levels_input`)."""
        if self.levels_input:
            return read_transcripts(path, field_name)
        from seqformer.data.speech import read_clip_list

        if Path(path).is_dir():
            raise DataError(f"{field_name}: {path} is a directory; give a TSV of "
                            "'path.wav<TAB>transcript' lines")
        clips = read_clip_list(path, field_name, "transcript")
        return SpokenSet(list(clips.waveforms), list(clips.labels), list(clips.sources),
                         list(clips.speakers))

    def evaluate(self, data: SpokenSet, beam: int | None = None, alpha: float | None = None
                 ) -> dict[str, float]:
        """CER / WER (percent) and ``n`` of the transcripts of ``data`` against its texts."""
        if len(data) == 0:
            raise DataError("nothing to evaluate: no utterances")
        hyps = self._transcripts(data, beam, alpha)
        self.last_hypotheses = hyps
        return scores(hyps, list(data.texts))

    def test_split(self) -> SpokenSet | None:
        """The recipe's test split (re-made from the cache), or None."""
        if self.recipe is None or self.run_dir is None:
            return None
        splits, fingerprint = load_speech_splits(self.recipe)
        check_same_split(self.recipe, fingerprint, self.run_dir / "recipe.yaml",
                         "give --data FILE.tsv instead")
        return splits["test"]


class Transcriber(SpeechRun):
    """A trained (or imported) Whisper with its tokenizer, feature settings and decoding
    defaults: ``transcribe`` WAV paths or waveforms, ``evaluate`` labelled utterances.

    An imported Whisper (``prompt`` from config.json's ``generation``, ``features`` with
    ``pad_to_frames``) is run as ``generate()`` runs it: the raw waveform (not trimmed or
    levelled as our spoken-words audio is) padded to 30 s, the checkpoint's prompt with
    ``language`` / ``task`` (None: the checkpoint's default, else detection), its suppressed
    tokens, and only text tokens in the transcript. A trained run has neither and takes no
    language or task."""

    def __init__(self, model: Whisper, tokenizer: Tokenizer, features: LogMel,
                 recipe: SpeechRecipe | None = None, prompt: WhisperPrompt | None = None,
                 language: str | None = None, task: str | None = None) -> None:
        self.model, self.tokenizer, self.features, self.recipe = model.eval(), tokenizer, \
            features, recipe
        self.decode = recipe.decode if recipe is not None else DecodeConfig()
        self.prompt = prompt
        self.language, self.task = language, task
        self._check_prompt(language, task)
        self.run_dir: Path | None = None
        self.last_hypotheses: list[str] = []

    def _check_prompt(self, language: str | None, task: str | None) -> None:
        """Bad ``language`` / ``task`` values fail before any audio is read."""
        if self.prompt is not None:
            self.prompt.template(language, task)
        elif language is not None or task is not None:
            raise ConfigError("language and task apply to an imported multilingual Whisper "
                              "(seqformer import of a Hugging Face checkpoint) only; this "
                              "model was trained without language or task tokens")

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", language: str | None = None,
             task: str | None = None) -> Transcriber:
        """The run or imported model in ``run_dir``; ``language`` / ``task`` become the
        defaults of :meth:`transcribe` (imported Whispers only)."""
        run_dir = Path(run_dir)
        data = read_whisper_config(run_dir)
        model = Whisper.load(run_dir, device)
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            recipe = speech_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                             str(path))
        prompt = WhisperPrompt.from_dict(data.get(GENERATION_KEY),
                                         f"{run_dir / 'config.json'}: {GENERATION_KEY}")
        transcriber = cls(model, tokenizer, LogMel.from_dict(data.get("features")), recipe,
                          prompt, language, task)
        transcriber.run_dir = run_dir
        return transcriber

    @property
    def levels_input(self) -> bool:
        """An imported Whisper (30 s windows) hears the raw clip, as ``generate()`` does."""
        return not self.features.pad_to_frames

    @property
    def max_samples(self) -> int:
        """The longest waveform the model takes (its window; 30 s for an imported Whisper):
        longer recordings are split at pauses by ``tasks.long_form``."""
        hop = self.features.hop_length
        if self.features.pad_to_frames:
            return self.features.pad_to_frames * hop
        return (self.model.config.max_frames - 1) * hop

    def _features(self, audio: Sequence[str | Path | np.ndarray]) -> list[torch.Tensor]:
        from seqformer.data.speech import read_wav

        # Our runs were trained on trimmed, levelled words; a 30 s Whisper on raw audio.
        level = prepare if self.levels_input else (lambda w: w)
        waves, names = [], []
        for i, item in enumerate(audio):
            if isinstance(item, str | Path):
                waves.append(level(read_wav(item)))
                names.append(str(item))
            else:
                waves.append(level(np.asarray(item, dtype=np.float32)))
                names.append(f"waveform {i + 1}")
        return featurize(SpokenSet(waves, [""] * len(waves), names), self.features, self.model)

    def _ids(self, feats: list[torch.Tensor], beam: int | None, alpha: float | None,
             max_length: int | None, language: str | None = None, task: str | None = None
             ) -> list[list[int]]:
        """Output ids of each utterance (after an imported Whisper's prompt)."""
        d = self.decode
        language = self.language if language is None else language
        task = self.task if task is None else task
        self._check_prompt(language, task)
        return decode_features(self.model, feats, beam or d.beam,
                               d.alpha if alpha is None else alpha, d.penalty,
                               max_length or d.max_length, self.prompt, language, task)

    def _texts(self, feats: list[torch.Tensor], beam: int | None, alpha: float | None,
               max_length: int | None, language: str | None = None, task: str | None = None
               ) -> list[str]:
        ids = self._ids(feats, beam, alpha, max_length, language, task)
        if self.prompt is None:
            return [self.tokenizer.decode(x) for x in ids]
        # Whisper's text starts with the space of its first word; the transcript does not.
        return [self.tokenizer.decode(self.prompt.text_ids(x)).strip() for x in ids]

    def transcribe(self, audio: Sequence[str | Path | np.ndarray], beam: int | None = None,
                   alpha: float | None = None, max_length: int | None = None,
                   language: str | None = None, task: str | None = None) -> list[str]:
        """The transcript of each WAV path or 16 kHz float waveform. ``language`` (``en``,
        ``<|en|>``) and ``task`` (``transcribe`` / ``translate``) steer an imported
        multilingual Whisper; None keeps the load-time choice (default: the checkpoint's
        own, else the language is detected per utterance)."""
        if not audio:
            return []
        return self._texts(self._features(audio), beam, alpha, max_length, language, task)

    def _transcripts(self, data: SpokenSet, beam: int | None, alpha: float | None
                     ) -> list[str]:
        return self._texts(featurize(data, self.features, self.model), beam, alpha, None)


def describe(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k.upper()} {v:.2f}" for k, v in metrics.items() if k != "n")
