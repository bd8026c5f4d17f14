"""Text to speech with the SpeechT5-shaped model (``task: text-to-speech``).

The task owns what the trainer must not know: making or reading the utterances
(``data/tts_corpus.py``), SpeechT5's target log-mel spectrogram (``data/tts_mel.py``, settings
saved as ``features`` in ``config.json``), the character tokenizer of the input texts,
validation and the run directory (``config.json`` with ``family: speecht5-tts``,
``recipe.yaml`` with the split fingerprint, ``tokenizer/``, ``model.safetensors``).
:class:`Synthesizer` is the inference side: ``Synthesizer.load(run).speak(["hello"])``.

Scores. Teacher-forced losses (``valid_loss``, ``valid_l1``) say little about what a listener
hears: a model can predict the next frame from the true previous one and still never stop, or
drift, when it feeds itself. The checkpoint is therefore chosen by the MCD
(``metrics/mcd.py``) of *free-running* generations against the recordings, with DTW absorbing
timing, and the length ratio (generated / recorded frames) is reported next to it. The round
trip (:func:`round_trip`) goes further: a speech-recognition run transcribes the vocoded
audio, and its CER is compared with the same recogniser's CER on the recordings of the same
words -- the gap is what the TTS (and the vocoder) lose.

SpeechT5 keeps its decoder pre-net dropout on at inference (the "consistent dropout" that makes
its outputs vary); generation here draws that dropout from a generator seeded per call, so the
same text gives the same audio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seqformer.data.mlm import ExampleStream
from seqformer.data.spoken_words import SpokenSet, prepare, read_transcript_splits
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.data.tts_corpus import input_texts, load_tts_words
from seqformer.data.tts_mel import TTSMel
from seqformer.errors import DataError
from seqformer.metrics.edit import char_error_rate
from seqformer.metrics.mcd import mcd_dtw
from seqformer.models.speecht5 import SpeechT5TTS, TTSBatch
from seqformer.recipe_tts import SpeakConfig, TTSRecipe, tts_recipe_from_dict
from seqformer.tasks.rundir import check_same_split, check_vocabulary, log, write_run_metadata
from seqformer.training.trainer import Trainer

GENERATE_BATCH = 32
GENERATION_SEED = 1234
WORD = re.compile(r"[a-z']+")  # what a tts-words run can say: its words are plain letters
WORD_PAUSE = 0.12  # seconds of silence between the words of a text
SAMPLES = 4  # test words a finished run writes as WAV files


def wav_name(index: int, text: str) -> str:
    """``NNN-text.wav``: the file the ``index``-th of several texts is spoken into."""
    stem = "".join(ch if ch.isalnum() else "_" for ch in text)[:40] or f"text{index + 1}"
    return f"{index + 1:03d}-{stem}.wav"

# (input ids, target log-mel (frames, bins), speaker index or -1)
Example = tuple[list[int], torch.Tensor, int]


# --- data -------------------------------------------------------------------------------------


def load_tts_splits(recipe: TTSRecipe) -> tuple[dict[str, SpokenSet | None], str]:
    """train / valid / test utterances of the recipe (test may be None for files) and a
    fingerprint of the split."""
    d = recipe.data
    if d.corpus == "tts-words":
        splits, fingerprint = load_tts_words(d.max_words, d.min_letters, d.max_letters,
                                             d.voices, d.input, d.espeak, log)
        return dict(splits), fingerprint
    assert d.train is not None  # the recipe requires it with corpus: files
    return read_transcript_splits(d.train, d.valid, d.test, d.valid_fraction)


def encode_inputs(texts: Sequence[str], tokenizer: Tokenizer, limit: int, where: str
                  ) -> list[list[int]]:
    """Token ids of each input text (eos at the end, as SpeechT5's tokenizer puts it), checked
    against the model's text positions."""
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if not getattr(tokenizer, "append_eos", False):  # an imported one adds it itself
            ids.append(tokenizer.eos_id)
        if len(ids) > limit:
            raise DataError(f"{where}: input {i + 1} ({text[:30]!r}) is {len(ids)} tokens, "
                            f"more than the model's {limit}; shorten it or raise "
                            "model.max_text_positions")
        out.append(ids)
    return out


def spectrograms(data: SpokenSet, features: TTSMel, limit: int, where: str
                 ) -> list[torch.Tensor]:
    """The target log-mel of every utterance, checked against the model's speech positions."""
    out = []
    for i, wave in enumerate(data.waveforms):
        mel = features(wave)
        if mel.shape[0] > limit:
            source = data.sources[i] if data.sources else f"utterance {i + 1}"
            raise DataError(f"{where}: {source}: {mel.shape[0]} frames exceed the model's "
                            f"{limit}; cut the audio or raise model.max_speech_positions")
        out.append(mel)
    return out


def collate(examples: Sequence[Example], pad_id: int, n_speakers: int) -> TTSBatch:
    """Padded input ids and spectrograms, their lengths and one-hot speaker vectors."""
    width = max(len(ids) for ids, _, _ in examples)
    frames = max(mel.shape[0] for _, mel, _ in examples)
    bins = examples[0][1].shape[1]
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mel = torch.zeros(len(examples), frames, bins)
    lengths = torch.zeros(len(examples), dtype=torch.long)
    speaker = torch.zeros(len(examples), n_speakers) if n_speakers else None
    for i, (x, m, s) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        mel[i, :m.shape[0]] = m
        lengths[i] = m.shape[0]
        if speaker is not None:
            speaker[i, s] = 1.0
    return TTSBatch(ids, mel, lengths, speaker)


class TTSStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (ids, mel, speaker) examples."""

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int, pad_id: int,
                 n_speakers: int) -> None:
        super().__init__(examples, batch_size, seed)
        self.pad_id, self.n_speakers = pad_id, n_speakers

    def make_batch(self, examples: list[Example], position: int) -> TTSBatch:
        return collate(examples, self.pad_id, self.n_speakers)


# --- generation and scores --------------------------------------------------------------------


def one_hot(indices: Sequence[int], n: int) -> torch.Tensor | None:
    """Speaker vectors of a model trained on ``n`` named voices (None for one voice)."""
    if not n:
        return None
    rows = torch.zeros(len(indices), n)
    rows[torch.arange(len(indices)), torch.tensor(list(indices), dtype=torch.long)] = 1.0
    return rows


@torch.no_grad()
def generate(model: SpeechT5TTS, inputs: Sequence[list[int]], speakers: torch.Tensor | None,
             speak: SpeakConfig, seed: int = GENERATION_SEED, max_frames: int | None = None
             ) -> list[torch.Tensor]:
    """Free-running spectrograms (frames, bins) of every input, in batches of similar length;
    ``speakers``: one speaker vector per input (or None); the pre-net dropout drawn from a
    generator seeded by ``seed``, so a call is repeatable."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
    for start in range(0, len(order), GENERATE_BATCH):
        chunk = order[start:start + GENERATE_BATCH]
        width = max(len(inputs[i]) for i in chunk)
        ids = torch.full((len(chunk), width), model.config.pad_id, dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, :len(inputs[i])] = torch.tensor(inputs[i])
        speaker = None if speakers is None else speakers[chunk].float().to(device)
        mels = model.generate(ids.to(device), speaker=speaker, threshold=speak.threshold,
                              min_len_ratio=speak.min_len_ratio,
                              max_len_ratio=speak.max_len_ratio, max_frames=max_frames,
                              generator=generator)
        for i, mel in zip(chunk, mels):
            out[i] = mel.float().cpu()
    return out


def mel_scores(generated: Sequence[torch.Tensor], references: Sequence[torch.Tensor]
               ) -> dict[str, float]:
    """Mean MCD (dB, DTW-aligned) and mean length ratio (generated / recorded frames)."""
    mcd = [mcd_dtw(g, r) for g, r in zip(generated, references) if g.shape[0] > 0]
    ratio = [g.shape[0] / max(r.shape[0], 1) for g, r in zip(generated, references)]
    # An empty generation has no cepstrum: it counts at the worst MCD seen (or 100 dB).
    empty = len(generated) - len(mcd)
    worst = max(mcd, default=100.0)
    return {"mcd": float(np.mean(mcd + [worst] * empty)) if generated else 0.0,
            "len_ratio": float(np.mean(ratio)) if ratio else 0.0, "n": float(len(generated))}


def validation(model: SpeechT5TTS, valid: list[Example], to_generate: list[Example],
               pad_id: int, n_speakers: int, speak: SpeakConfig) -> dict[str, float]:
    """Teacher-forced loss and post-net L1 per frame over ``valid``; MCD and length ratio of
    free-running generations of ``to_generate``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss = l1 = frames = 0.0
    with torch.no_grad():
        for i in range(0, len(valid), GENERATE_BATCH):
            batch = collate(valid[i:i + GENERATE_BATCH], pad_id, n_speakers)
            out = model(batch.to(device))
            n = float(batch.mel_lengths.sum())
            loss += float(out.loss) * n
            l1 += float(out.l1) * n
            frames += n
    metrics = {"valid_loss": loss / max(frames, 1), "valid_l1": l1 / max(frames, 1)}
    if to_generate:
        mels = generate(model, [x for x, _, _ in to_generate],
                        one_hot([s for _, _, s in to_generate], n_speakers), speak)
        scores = mel_scores(mels, [m for _, m, _ in to_generate])
        metrics.update(mcd=scores["mcd"], len_ratio=scores["len_ratio"])
    model.train(was_training)
    return metrics


# --- training ---------------------------------------------------------------------------------


def train_tts(recipe: TTSRecipe, out_dir: str | Path, resume: bool = False
              ) -> tuple[dict, dict[str, float]]:
    """Train into ``out_dir``; returns the trainer summary and the best checkpoint's test
    scores (empty without a test split), also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    splits, split_fp = load_tts_splits(recipe)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert train is not None and valid is not None
    log(f"data: {len(train)} train / {len(valid)} valid / {len(test) if test else 0} test "
        f"utterances (split {split_fp}); input {recipe.data.input}, e.g. "
        f"{train.sources[0]} -> {train.texts[0]!r}")
    tokenizer = (load_tokenizer(out / "tokenizer") if resume
                 else train_tokenizer("char", train.texts))
    features = TTSMel()
    torch.manual_seed(recipe.train.seed)
    model = SpeechT5TTS(recipe.model_config(tokenizer.vocab_size, features.num_mel_bins))
    c = model.config
    voices = recipe.data.speakers

    def examples(data: SpokenSet, name: str) -> list[Example]:
        ids = encode_inputs(data.texts, tokenizer, c.max_text_positions, f"data.{name}")
        mels = spectrograms(data, features, c.max_speech_positions * c.reduction_factor,
                            f"data.{name}")
        who = [voices.index(s) if voices else -1 for s in data.speakers] or [-1] * len(ids)
        return list(zip(ids, mels, who))

    encoded = {name: examples(data, name) for name, data in splits.items() if data is not None}
    frames = [m.shape[0] for _, m, _ in encoded["train"]]
    stream = TTSStream(encoded["train"], recipe.data.batch_size, recipe.train.seed, c.pad_id,
                       len(voices))
    log(f"model: SpeechT5 {model.num_parameters() / 1e6:.2f}M parameters, d_model "
        f"{c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, vocab "
        f"{tokenizer.vocab_size}, {len(voices) or 1} voice(s); {len(frames)} training "
        f"utterances of {min(frames)}-{max(frames)} frames (mean {np.mean(frames):.0f}), "
        f"{stream.per_epoch} batches an epoch, {recipe.train.max_steps} steps")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json({**features.to_dict(), "voices": voices}))

    if not resume:
        tokenizer.save(out / "tokenizer")
    save_run(out)
    to_generate = encoded["valid"][: recipe.data.valid_generate]
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: validation(m, encoded["valid"], to_generate,
                                                    c.pad_id, len(voices), recipe.speak),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, float] = {}
    if test is not None and not summary.get("interrupted"):
        best = Synthesizer.load(out, str(trainer.device))
        results = best.evaluate(test)
        (out / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n",
                                               encoding="utf-8")
        words = list(dict.fromkeys(test.words()))[:SAMPLES]
        summary["samples"] = [str(p) for p in best.write_samples(out / "samples", words)]
    return summary, results


# --- inference --------------------------------------------------------------------------------


class Synthesizer:
    """A trained (or imported) SpeechT5 TTS with its tokenizer, feature settings, voices and
    generation defaults: ``spectrograms`` and ``speak`` texts, ``evaluate`` recordings."""

    def __init__(self, model: SpeechT5TTS, tokenizer: Tokenizer, features: TTSMel,
                 voices: list[str], recipe: TTSRecipe | None = None) -> None:
        self.model, self.tokenizer, self.features = model.eval(), tokenizer, features
        self.voices, self.recipe = voices, recipe
        self.speak_config = recipe.speak if recipe is not None else SpeakConfig()
        self.input_kind = recipe.data.input if recipe is not None else "spelling"
        self.espeak = recipe.data.espeak if recipe is not None else None
        self.run_dir: Path | None = None
        self.unknown = 0
        self.last_scored: SpokenSet | None = None  # the data of the last evaluate, and its
        self.last_generated: list[torch.Tensor] = []  # generations and recordings' spectrograms
        self.last_references: list[torch.Tensor] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Synthesizer:
        run_dir = Path(run_dir)
        model = SpeechT5TTS.load(run_dir, device)
        settings = dict(SpeechT5TTS.read_config(run_dir).get("features") or {})
        voices = list(settings.pop("voices", []) or [])
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            recipe = tts_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                          str(path))
        synthesizer = cls(model, tokenizer, TTSMel.from_dict(settings), voices, recipe)
        synthesizer.run_dir = run_dir
        return synthesizer

    def voice_index(self, voice: str | None) -> int:
        """The speaker index of ``voice`` (default: the first voice trained)."""
        if not self.voices:
            if voice is not None:
                raise DataError(f"--voice {voice}: this model was trained on one voice; "
                                "leave --voice out")
            return -1
        if voice is None:
            return 0
        if voice not in self.voices:
            raise DataError(f"--voice {voice}: not one of the model's voices "
                            f"({', '.join(self.voices)})")
        return self.voices.index(voice)

    def inputs(self, texts: Sequence[str], voice: str | None = None) -> list[list[int]]:
        """Model input ids of user texts: espeak-ng phonemes when the model was trained on
        them (in the voice's accent), else the lower-cased spelling; characters the training
        texts never had become unk and are counted in ``self.unknown``."""
        clean = [" ".join(t.split()) for t in texts]
        if self.recipe is not None:  # our runs read lower-case words; an imported one, any case
            clean = [t.lower() for t in clean]
        for i, t in enumerate(clean):
            if not t:
                raise DataError(f"text {i + 1} is empty; give something to say")
        if self.input_kind == "phonemes":
            chosen = voice or (self.voices[0] if self.voices else self._recipe_voice())
            clean = input_texts(clean, [chosen] * len(clean), "phonemes", self.espeak)
        self.unknown = sum(self.tokenizer.count_unknown(t) for t in clean)
        return encode_inputs(clean, self.tokenizer, self.model.config.max_text_positions,
                             "text")

    def _recipe_voice(self) -> str:
        assert self.recipe is not None
        return self.recipe.data.voices[0]

    def speaker_rows(self, n: int, voice: str | None = None,
                     embedding: np.ndarray | None = None) -> torch.Tensor | None:
        """The speaker vector of ``n`` inputs: the voice's one-hot for a multi-voice run, the
        given ``embedding`` (e.g. an x-vector) for an imported SpeechT5 that takes one."""
        dim = self.model.config.speaker_embedding_dim
        if embedding is not None:
            vector = torch.as_tensor(np.asarray(embedding, dtype=np.float32)).flatten()
            if self.voices or vector.numel() != dim:
                raise DataError(f"speaker embedding of {vector.numel()} values; this model "
                                + (f"takes {dim} (model.speaker_embedding_dim)" if dim and
                                   not self.voices else "chooses its voice with --voice"))
            return vector.expand(n, dim).clone()
        if dim and not self.voices:
            raise DataError(f"this model needs a speaker embedding of {dim} values (e.g. an "
                            "x-vector); give --speaker FILE.npy")
        return one_hot([self.voice_index(voice)] * n, len(self.voices))

    def spectrograms(self, texts: Sequence[str], voice: str | None = None,
                     seed: int = GENERATION_SEED, max_frames: int | None = None,
                     speaker_embedding: np.ndarray | None = None) -> list[torch.Tensor]:
        """The generated log-mel spectrogram (frames, bins) of each text."""
        rows = self.speaker_rows(len(texts), voice, speaker_embedding)
        ids = self.inputs(texts, voice)
        return generate(self.model, ids, rows, self.speak_config, seed, max_frames)

    def speak(self, texts: Sequence[str], voice: str | None = None, vocoder: str = "griffin-lim",
              seed: int = GENERATION_SEED, max_frames: int | None = None,
              speaker_embedding: np.ndarray | None = None) -> list[np.ndarray]:
        """16 kHz float waveforms of each text. A model trained on single words (tts-words:
        no space ever in its inputs) says a text word by word, joined by short pauses, rather
        than read the spaces as unknown symbols."""
        if not self.word_level:
            return self.vocode(self.spectrograms(texts, voice, seed, max_frames,
                                                 speaker_embedding), vocoder)
        split = [WORD.findall(t.lower()) for t in texts]
        for i, words in enumerate(split):
            if not texts[i].strip():
                raise DataError(f"text {i + 1} is empty; give something to say")
            if not words:
                raise DataError(f"text {i + 1} ({texts[i][:30]!r}) has no words to say")
        flat = [w for words in split for w in words]
        waves = iter(self.vocode(self.spectrograms(flat, voice, seed, max_frames,
                                                   speaker_embedding), vocoder))
        pause = np.zeros(int(WORD_PAUSE * self.features.sampling_rate), np.float32)
        out = []
        for words in split:
            pieces = [next(waves) for _ in words]
            joined = [x for piece in pieces for x in (piece, pause)][:-1]
            out.append(np.concatenate(joined).astype(np.float32))
        return out

    def write_samples(self, directory: Path, texts: Sequence[str],
                      vocoder: str = "griffin-lim") -> list[Path]:
        """``texts`` spoken into ``directory``, one :func:`wav_name` file each."""
        from seqformer.decoding.vocoder import save_wav

        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / wav_name(i, t) for i, t in enumerate(texts)]
        for path, wave in zip(paths, self.speak(texts, vocoder=vocoder)):
            save_wav(path, wave, self.features.sampling_rate)
        return paths

    @property
    def word_level(self) -> bool:
        """Trained on single words (its tokenizer never saw a space)?"""
        return (self.recipe is not None and self.recipe.data.corpus == "tts-words"
                and self.tokenizer.count_unknown(" ") > 0)

    def vocode(self, mels: Sequence[torch.Tensor], vocoder: str = "griffin-lim"
               ) -> list[np.ndarray]:
        from seqformer.decoding.vocoder import load_vocoder

        run = load_vocoder(vocoder, self.features, n_iter=self.speak_config.griffin_lim_iters)
        return [np.asarray(run(m), dtype=np.float32) if m.shape[0] else np.zeros(0, np.float32)
                for m in mels]

    def evaluate(self, data: SpokenSet) -> dict[str, float]:
        """MCD (dB) and length ratio of generations of ``data``'s texts against its
        recordings."""
        if len(data) == 0:
            raise DataError("nothing to evaluate: no utterances")
        c = self.model.config
        ids = encode_inputs(data.texts, self.tokenizer, c.max_text_positions, "data")
        refs = spectrograms(data, self.features, c.max_speech_positions * c.reduction_factor,
                            "data")
        who = [self.voices.index(s) if s in self.voices else 0
               for s in (data.speakers or [""] * len(ids))]
        rows = one_hot(who, len(self.voices)) if self.voices else self.speaker_rows(len(ids))
        self.last_generated = generate(self.model, ids, rows, self.speak_config)
        # What round_trip reuses rather than generate and analyse the same utterances again.
        self.last_scored, self.last_references = data, refs
        return mel_scores(self.last_generated, refs)

    def test_split(self) -> SpokenSet | None:
        """The recipe's test split (re-made from the audio cache), or None."""
        if self.recipe is None or self.run_dir is None:
            return None
        splits, fingerprint = load_tts_splits(self.recipe)
        check_same_split(self.recipe, fingerprint, self.run_dir / "recipe.yaml",
                         "give --data FILE.tsv instead")
        return splits["test"]


def round_trip(synthesizer: Synthesizer, data: SpokenSet, words: Sequence[str],
               transcriber: Any, vocoder: str = "griffin-lim") -> dict[str, float]:
    """A speech-recognition run's CER (percent) against ``words`` (what was said) on ``data``'s
    recordings, on the recordings' spectrograms put through the vocoder (copy synthesis) and on
    the vocoded generations of the same texts: the intelligibility the vocoder and the TTS
    keep. Generations and reference spectrograms are those of the last
    :meth:`Synthesizer.evaluate` when it scored this very ``data``."""
    if synthesizer.last_scored is not data:
        synthesizer.evaluate(data)

    def heard(mels: Sequence[torch.Tensor]) -> list[str]:
        audio = [prepare(w) if len(w) else np.zeros(1600, np.float32)
                 for w in synthesizer.vocode(mels, vocoder)]
        return transcriber.transcribe(audio)

    real = transcriber.transcribe(list(data.waveforms))
    # The recordings' own spectrograms through the same vocoder: what the vocoder alone loses.
    copied = heard(synthesizer.last_references)
    spoken = heard(synthesizer.last_generated)
    return {"asr_cer_recorded": char_error_rate(real, list(words)),
            "asr_cer_vocoded": char_error_rate(copied, list(words)),
            "asr_cer_generated": char_error_rate(spoken, list(words)),
            "n": float(len(words))}
