"""Speech to text with a CTC head on the wav2vec 2.0-shaped encoder (``task: speech-ctc``).

Connectionist temporal classification (Graves et al., 2006) lets an encoder-only model
transcribe: every 20 ms frame emits a character or a blank, repeats merge, blanks vanish, and
the loss sums over every alignment that spells the transcript. There is no decoder, so decoding
is one forward pass plus a collapse (greedy) or a prefix beam search (``decoding/ctc.py``).
This is how wav2vec 2.0 and HuBERT are fine-tuned (``Wav2Vec2ForCTC``), usually from a
self-supervised run (``init_from``, ``tasks/speech_ssl.py``) with the CNN feature encoder
frozen (``freeze: feature-encoder``).

Data, tokenizer (characters; the pad id 0 doubles as CTC's blank), metrics (CER / WER) and the
run-directory layout are the Whisper task's (``tasks/speech.py``), so the two families compare
on the same splits with the same numbers. :class:`CTCTranscriber` has the inference surface of
:class:`~seqformer.tasks.speech.Transcriber`, so ``seqformer transcribe`` and ``evaluate`` take
either kind of run.

A DiscreteBERT encoder (``model.frontend: units``) fine-tunes the same way: its k-means units
are buffers of the model, so ``init_from`` brings them along. Trained from scratch, the task
fits them first on the training audio (:func:`~seqformer.tasks.speech_ssl.fit_front_end`, the
pretraining defaults of ``units``), so the two starting points differ only in the weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqformer.config import to_dict
from seqformer.data.masking import span_mask
from seqformer.data.mlm import ExampleStream
from seqformer.data.spoken_words import SpokenSet, prepare
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.decoding.ctc import ctc_beam_search, ctc_greedy
from seqformer.errors import CheckpointError, DataError
from seqformer.models.wav2vec2 import (
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    WaveBatch,
    backbone_config,
    frame_lengths,
)
from seqformer.recipe_ssl import CTCDecodeConfig, CTCRecipe, UnitsConfig, ssl_recipe_from_dict
from seqformer.tasks.rundir import (
    check_vocabulary,
    log,
    recipe_if_saved,
    write_run_metadata,
)
from seqformer.tasks.speech import (
    SpeechRun,
    encode_texts,
    in_length_batches,
    load_speech_splits,
    log_splits,
    score_test,
    scores,
)
from seqformer.tasks.speech_ssl import batch_seed, fit_front_end, normalise
from seqformer.training.trainer import Trainer

DECODE_BATCH = 64
FINETUNE_MASK_PROB = 0.05
# Parameter names of the CNN feature encoder, which wav2vec 2.0 fine-tuning keeps frozen.
FEATURE_ENCODER = ["wav2vec2.feature_extractor.*"]

Example = tuple[torch.Tensor, list[int]]


def collate(examples: Sequence[Example], config: Wav2Vec2Config | None = None,
            generator: torch.Generator | None = None) -> WaveBatch:
    """Padded waveforms and transcripts; with a generator and ``mask_time_prob`` > 0, a span
    mask over the frames (wav2vec 2.0 fine-tunes with this SpecAugment-like masking)."""
    lengths = torch.tensor([len(w) for w, _ in examples], dtype=torch.long)
    waves = torch.zeros(len(examples), int(lengths.max()))
    for i, (w, _) in enumerate(examples):
        waves[i, : len(w)] = w
    text_lengths = torch.tensor([len(y) for _, y in examples], dtype=torch.long)
    text = torch.zeros(len(examples), max(1, int(text_lengths.max())), dtype=torch.long)
    for i, (_, y) in enumerate(examples):
        text[i, : len(y)] = torch.tensor(y, dtype=torch.long)
    batch = WaveBatch(waves, lengths, text=text, text_lengths=text_lengths)
    if config is not None and generator is not None and config.mask_time_prob > 0:
        total = int(frame_lengths(config, lengths.max().view(1))[0])
        batch.mask_time = span_mask(frame_lengths(config, lengths), total,
                                    config.mask_time_prob, config.mask_time_length, generator,
                                    min_masks=0)
    return batch


class CTCStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch, a seeded time mask per batch."""

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int,
                 config: Wav2Vec2Config) -> None:
        super().__init__(examples, batch_size, seed)
        self.config = config

    def make_batch(self, examples: list[Example], position: int) -> WaveBatch:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, position, "ctc"))
        return collate(examples, self.config, generator)


@torch.no_grad()
def decode_waves(model: Wav2Vec2ForCTC, waves: list[torch.Tensor], beam: int = 1,
                 blank: int = 0) -> list[list[int]]:
    """Output ids of every (normalised) waveform, batched by length; ``blank`` is the CTC
    blank (0 for our runs, HF's ``pad_token_id`` for an imported model)."""
    device = next(model.parameters()).device

    def decode(chunk: list[int]) -> list[list[int]]:
        batch = collate([(waves[i], []) for i in chunk]).to(device)
        result = model(WaveBatch(batch.waves, batch.lengths))
        assert result.logits is not None
        log_probs = result.logits.float().log_softmax(-1).cpu()
        frames = result.frame_mask.sum(-1).cpu()
        if beam <= 1:
            return ctc_greedy(log_probs, frames, blank)
        return [best[0][0] for best in ctc_beam_search(log_probs, frames, beam, blank)]

    return in_length_batches([len(w) for w in waves], decode, DECODE_BATCH)


def validation(model: Wav2Vec2ForCTC, valid: list[Example], decode: list[Example],
               tokenizer: Tokenizer) -> dict[str, float]:
    """Mean CTC loss per utterance over ``valid``; CER / WER of greedy decodings of
    ``decode``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss = count = 0.0
    with torch.no_grad():
        for i in range(0, len(valid), DECODE_BATCH):
            chunk = valid[i:i + DECODE_BATCH]
            out = model(collate(chunk).to(device))
            assert out.loss is not None
            loss += float(out.loss) * len(chunk)
            count += len(chunk)
    metrics = {"valid_loss": loss / max(count, 1)}
    if decode:
        ids = decode_waves(model, [w for w, _ in decode])
        hyps = [tokenizer.decode(x) for x in ids]
        refs = [tokenizer.decode(y) for _, y in decode]
        metrics.update({k: v for k, v in scores(hyps, refs).items() if k != "n"})
    model.train(was_training)
    return metrics


def build_model(recipe: CTCRecipe, vocab_size: int, base: Wav2Vec2Config | None
                ) -> Wav2Vec2ForCTC:
    """A CTC model: the encoder of ``init_from`` (a pretraining run, an imported encoder or
    another CTC run: its shape ``base``, its weights) under a fresh head, or a fresh encoder of
    the recipe's shape."""
    if recipe.init_from is None or base is None:
        return Wav2Vec2ForCTC(recipe.model_config(vocab_size))
    fields = {k: v for k, v in to_dict(base).items() if k not in ("vocab_size", "num_labels")}
    # Pretraining hides about half the frames; fine-tuning hides a few (HF's 0.05) unless the
    # recipe says otherwise -- inheriting 0.65 would starve the CTC head of its input.
    fields["mask_time_prob"] = FINETUNE_MASK_PROB
    model = Wav2Vec2ForCTC(recipe.model_config(vocab_size, fields))
    model.load_backbone(recipe.init_from)
    return model


def train_ctc(recipe: CTCRecipe, out_dir: str | Path, resume: bool = False
              ) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Fine-tune (or train from scratch) into ``out_dir``; returns the trainer summary and the
    best checkpoint's test metrics, greedy and with ``decode.beam`` (empty without a test
    split), also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    # Before any audio is made: a wrong init_from should fail in a second, not after synthesis.
    base = backbone_config(recipe.init_from) if recipe.init_from else None
    splits, split_fp = load_speech_splits(recipe)  # type: ignore[arg-type]
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert train is not None and valid is not None
    log_splits(recipe, splits, split_fp)
    tokenizer = (load_tokenizer(out / "tokenizer") if resume
                 else train_tokenizer("char", train.texts))
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe, tokenizer.vocab_size, base)
    c = model.config
    if c.frontend == "units" and base is None and not resume:
        fit_front_end(model.wav2vec2, train.waveforms, UnitsConfig())

    def examples(data: SpokenSet, name: str) -> list[Example]:
        waves = [normalise(w) for w in data.waveforms]
        ids = encode_texts(data, tokenizer, 10_000, f"data.{name}")
        frames = frame_lengths(c, torch.tensor([len(w) for w in waves]))
        for i, (n, y) in enumerate(zip(frames.tolist(), ids)):
            if len(y) > n:
                source = data.sources[i] if data.sources else f"utterance {i + 1}"
                raise DataError(f"data.{name}: {source}: {len(y)} characters in {n} frames; "
                                "CTC needs at least one frame per character (is the audio "
                                "cut short?)")
        return list(zip(waves, ids))

    encoded = {name: examples(data, name) for name, data in splits.items() if data is not None}
    train_config = recipe.train
    if recipe.freeze == "feature-encoder":
        train_config = dataclasses.replace(train_config,
                                           freeze=[*train_config.freeze, *FEATURE_ENCODER])
    stream = CTCStream(encoded["train"], recipe.data.batch_size, recipe.train.seed, c)
    front = f"unit front end ({c.units_k} units), " if c.frontend == "units" else ""
    log(f"model: wav2vec 2.0-shaped CTC, {front}{model.num_parameters() / 1e6:.2f}M parameters, "
        f"{c.layers} {c.encoder_block} layers, d_model {c.d_model}, vocab {c.vocab_size}, "
        + (f"encoder from {recipe.init_from}" if recipe.init_from else "from scratch")
        + f", freeze {recipe.freeze}; {stream.per_epoch} batches an epoch, "
        f"{recipe.train.max_steps} steps")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json())

    if not resume:
        tokenizer.save(out / "tokenizer")
    save_run(out)
    to_decode = encoded["valid"][: recipe.data.valid_decode]
    trainer = Trainer(model, train_config, stream, out,
                      validate=lambda m: validation(m, encoded["valid"], to_decode, tokenizer),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, dict[str, float]] = {}
    if test is not None and not summary.get("interrupted"):
        results = score_test(CTCTranscriber.load(out, str(trainer.device)), test,
                             recipe.decode.beam, out)
    return summary, results


class CTCTranscriber(SpeechRun):
    """A trained or imported CTC model with its tokenizer and decoding default:
    ``transcribe`` WAV paths or waveforms, ``evaluate`` labelled utterances (the surface of
    ``tasks.speech.Transcriber``).

    The waveform reaches the model as it reached it in training. A trained run (it has a
    recipe) learnt on trimmed, peak-levelled, normalised audio, so its input gets the same.
    An imported model (no recipe) gets what HF's ``Wav2Vec2FeatureExtractor`` gives it: the
    samples as read, normalised per utterance only under ``features.normalize``
    (``do_normalize``) -- so its transcripts are ``processor.batch_decode`` of HF's greedy
    logits. The CTC blank is the tokenizer's pad id (0 for our runs, HF's ``pad_token_id``
    for an imported vocabulary)."""

    def __init__(self, model: Wav2Vec2ForCTC, tokenizer: Tokenizer,
                 recipe: CTCRecipe | None = None, normalize: bool = True) -> None:
        self.model, self.tokenizer, self.recipe = model.eval(), tokenizer, recipe
        self.decode = recipe.decode if recipe is not None else CTCDecodeConfig()
        self.normalize = normalize
        self.run_dir: Path | None = None
        self.last_hypotheses: list[str] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> CTCTranscriber:
        from seqformer.models.wav2vec2 import read_wav2vec2_config

        run_dir = Path(run_dir)
        model = Wav2Vec2ForCTC.load(run_dir, device)
        recipe = recipe_if_saved(run_dir, ssl_recipe_from_dict)
        if recipe is None and not (run_dir / "tokenizer").is_dir():
            raise CheckpointError(f"{run_dir}: no tokenizer/, so its CTC outputs have no text "
                                  "(imported without a vocab.json?); re-import from a "
                                  "directory holding the Wav2Vec2CTCTokenizer files")
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        features = read_wav2vec2_config(run_dir).get("features") or {}
        transcriber = cls(model, tokenizer, recipe, bool(features.get("normalize", True)))
        transcriber.run_dir = run_dir
        return transcriber

    @property
    def levels_input(self) -> bool:
        """A trained run levels its input (trim, peak) as in training; an imported model hears
        what HF's feature extractor would give it."""
        return self.recipe is not None

    def _level(self, wave: np.ndarray) -> np.ndarray:
        return prepare(wave) if self.levels_input else wave

    def _texts(self, waves: list[np.ndarray], beam: int | None) -> list[str]:
        inputs = [normalise(w) if self.normalize else torch.as_tensor(w, dtype=torch.float32)
                  for w in waves]
        ids = decode_waves(self.model, inputs, beam or self.decode.beam, self.tokenizer.pad_id)
        return [self.tokenizer.decode(x) for x in ids]

    def reference(self, text: str) -> str:
        """A reference transcript as the tokenizer compares it: in the case an imported
        single-case vocabulary transcribes in (``CTCVocabTokenizer.reference``), else as is."""
        fold = getattr(self.tokenizer, "reference", None)
        return fold(text) if fold is not None else text

    def evaluate(self, data: SpokenSet, beam: int | None = None, alpha: float | None = None
                 ) -> dict[str, float]:
        """CER / WER (percent) and ``n``, the references in the tokenizer's case
        (:meth:`reference`)."""
        if len(data) == 0:
            raise DataError("nothing to evaluate: no utterances")
        hyps = self._transcripts(data, beam, alpha)
        self.last_hypotheses = hyps
        return scores(hyps, [self.reference(t) for t in data.texts])

    def transcribe(self, audio: Sequence[str | Path | np.ndarray], beam: int | None = None,
                   alpha: float | None = None, max_length: int | None = None) -> list[str]:
        """The transcript of each WAV path or 16 kHz float waveform (``alpha`` and
        ``max_length`` belong to the Whisper decoder and are ignored: CTC emits at most one
        character per frame)."""
        from seqformer.data.speech import read_wav

        if not audio:
            return []
        waves = [self._level(read_wav(a) if isinstance(a, str | Path)
                             else np.asarray(a, dtype=np.float32)) for a in audio]
        return self._texts(waves, beam)

    def _transcripts(self, data: SpokenSet, beam: int | None, alpha: float | None
                     ) -> list[str]:
        return self._texts(list(data.waveforms), beam)
