"""VALL-E on EnCodec codes (``task: codec-tts``, family ``valle``).

The task owns what the model must not know: the tts-words corpus (``data/tts_corpus.py``:
every word by every voice, phoneme or spelling input), the frozen codec of an earlier
``task: codec`` run (``codec.from_run``), the char tokenizer of the input texts and the run
directory. Every utterance is encoded once with the codec at ``codec.bandwidth`` and the codes
cached in the run (``codes.pt``, keyed by the codec's weights, bandwidth and split), so
training and ``--resume`` never re-run the encoder. The codec itself is copied into the run
(``codec/``): a VALL-E run is self-contained, and its codes can never be decoded by another
codec than the one they came from.

Training examples are VALL-E's zero-shot setting in miniature: a target word of one voice,
prompted by another training word of the *same* voice; the text is the prompt's transcript, a
space, then the target's (what the model reads when it continues the prompt). The prompt is
drawn for each (seed, batch position, row), as is the NAR stage of the batch (one stage per
batch, as in the paper), so a batch is a pure function of the stream's position and
``--resume`` is exact.

Scores. Validation: teacher-forced AR and NAR cross-entropy (``valid_loss`` their sum; the
NAR at every stage) and token accuracies, with fixed prompts. Test: free-running generation
(AR sampling at ``generate.temperature`` / ``top_k`` from a seeded generator, greedy NAR),
decoded by the codec, against the recording: MCD after DTW of SpeechT5 log-mels
(``metrics/mcd.py``), length ratio, and ``codec_mcd``, the MCD of the codec re-synthesising the
recording itself -- the floor no codec language model can go below. The prompt of a test word
is another test word of the same voice. :class:`CodecSpeaker` is the inference side
(``speak``, ``evaluate``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seqformer.data.mlm import PositionStream
from seqformer.data.spoken_words import SpokenSet, prepare
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.data.tts_corpus import input_texts, load_tts_words
from seqformer.data.tts_mel import TTSMel
from seqformer.errors import CheckpointError, DataError, UserError
from seqformer.metrics.mcd import mcd_dtw
from seqformer.models.valle import VALLE, CodecBatch
from seqformer.recipe_codec import CodecGenerateConfig, VALLERecipe, codec_recipe_from_dict
from seqformer.tasks.codec import CodecRun
from seqformer.tasks.rundir import check_same_split, check_vocabulary, log, write_run_metadata
from seqformer.training.checkpoint import atomic_write
from seqformer.training.trainer import Trainer

CODES_NAME = "codes.pt"
CODEC_DIR = "codec"
SAMPLES = 4
VALID_BATCH = 32


@dataclass(eq=False)
class Utterance:
    """One encoded utterance: input token ids, codes (n_q, frames), voice."""

    ids: list[int]
    codes: torch.Tensor
    voice: str


# --- data -------------------------------------------------------------------------------------


def load_codec_run(recipe: VALLERecipe, device: str = "cpu") -> CodecRun:
    """The frozen codec of ``codec.from_run`` (one-line errors for a missing or wrong run)."""
    path = Path(recipe.codec.from_run)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"codec.from_run: {path} is not a run directory; train the codec "
                              "first: seqformer train encodec-spoken-words --out "
                              f"{path}")
    codec = CodecRun.load(path, device)
    if recipe.codec.bandwidth is not None:
        codec.model.n_q(recipe.codec.bandwidth)  # a ConfigError for a bandwidth it lacks
        codec.bandwidth = recipe.codec.bandwidth
    if codec.sampling_rate != 16000:
        raise CheckpointError(f"codec.from_run: {path} codes {codec.sampling_rate} Hz audio; "
                              "the tts-words corpus is 16 kHz")
    return codec


def codec_key(codec: CodecRun, split_fp: str) -> str:
    """What the cached codes depend on: the codec's weights, the bandwidth and the split."""
    digest = hashlib.sha256()
    for name, tensor in sorted(codec.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{codec.bandwidth}|{split_fp}".encode())
    return digest.hexdigest()[:16]


def encode_splits(splits: dict[str, SpokenSet], codec: CodecRun, split_fp: str,
                  cache: Path) -> dict[str, list[torch.Tensor]]:
    """Codes (n_q, frames) int16 of every utterance of every split, from ``cache`` when it was
    made by the same codec, bandwidth and split, else encoded now and cached."""
    key = codec_key(codec, split_fp)
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored.get("key") == key:
            return {name: [c.long() for c in codes] for name, codes in stored["codes"].items()}
    log(f"encoding {sum(len(s) for s in splits.values())} utterances with the codec at "
        f"{codec.bandwidth} kbps")
    codes = {name: [codec.encode(w) for w in data.waveforms] for name, data in splits.items()}
    atomic_write(cache, lambda tmp: torch.save(
        {"key": key, "codes": {n: [c.to(torch.int16) for c in cs] for n, cs in codes.items()}},
        tmp))
    return codes


def join_text(prompt_text: str, text: str) -> str:
    """What the model reads: the prompt's transcript, a space, the new text."""
    return f"{prompt_text} {text}"


def encode_text(tokenizer: Tokenizer, text: str, limit: int, where: str) -> list[int]:
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError(f"{where}: empty text")
    if len(ids) > limit:
        raise DataError(f"{where}: {text[:40]!r} is {len(ids)} tokens, more than the model's "
                        f"{limit}; shorten it or raise model.max_text")
    return ids


def same_voice_partner(items: Sequence[Utterance], index: int, rng: random.Random) -> int:
    """Another utterance of ``items[index]``'s voice (itself when it is the voice's only
    one): the acoustic prompt."""
    voice = items[index].voice
    others = [j for j, u in enumerate(items) if u.voice == voice and j != index]
    return rng.choice(others) if others else index


def collate(pairs: Sequence[tuple[Utterance, Utterance]], space: list[int], pad_id: int,
            stage: int) -> CodecBatch:
    """(prompt, target) pairs -> a padded :class:`CodecBatch`."""
    texts = [p.ids + space + t.ids for p, t in pairs]
    n_q = pairs[0][1].codes.shape[0]
    text = torch.full((len(pairs), max(map(len, texts))), pad_id, dtype=torch.long)
    tp = [p.codes.shape[1] for p, _ in pairs]
    tt = [t.codes.shape[1] for _, t in pairs]
    prompt = torch.zeros(len(pairs), n_q, max(tp), dtype=torch.long)
    target = torch.zeros(len(pairs), n_q, max(tt), dtype=torch.long)
    for i, ((p, t), ids) in enumerate(zip(pairs, texts)):
        text[i, :len(ids)] = torch.tensor(ids)
        prompt[i, :, :tp[i]] = p.codes
        target[i, :, :tt[i]] = t.codes
    return CodecBatch(text, torch.tensor([len(x) for x in texts]), prompt, torch.tensor(tp),
                      target, torch.tensor(tt), stage)


class PromptedStream(PositionStream):
    """Training batches: a seeded shuffle of the targets per epoch; each row's prompt (another
    utterance of the same voice) and the batch's NAR stage drawn from (seed, position)."""

    def __init__(self, items: Sequence[Utterance], batch_size: int, seed: int,
                 space: list[int], pad_id: int, n_q: int) -> None:
        if not items:
            raise DataError("no training utterances; check the recipe's data section")
        self.items, self.batch_size, self.seed = list(items), batch_size, seed
        self.space, self.pad_id, self.n_q = space, pad_id, n_q
        self.per_epoch = max(1, -(-len(self.items) // batch_size))
        self.position = 0

    def batch_at(self, position: int) -> CodecBatch:
        epoch, index = divmod(position, self.per_epoch)
        order = list(range(len(self.items)))
        random.Random(f"seqformer.valle.order:{self.seed}:{epoch}").shuffle(order)
        rng = random.Random(f"seqformer.valle.batch:{self.seed}:{position}")
        stage = rng.randrange(1, self.n_q)
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        pairs = [(self.items[same_voice_partner(self.items, i, rng)], self.items[i])
                 for i in chosen]
        return collate(pairs, self.space, self.pad_id, stage)



def fixed_pairs(items: Sequence[Utterance], seed: int) -> list[tuple[Utterance, Utterance]]:
    """(prompt, target) for every utterance of a held-out split: the prompt another utterance
    of the same voice in that split, drawn once from ``seed``."""
    rng = random.Random(f"seqformer.valle.fixed:{seed}")
    return [(items[same_voice_partner(items, i, rng)], items[i]) for i in range(len(items))]


# --- scores -----------------------------------------------------------------------------------


@torch.no_grad()
def validation(model: VALLE, pairs: Sequence[tuple[Utterance, Utterance]], space: list[int],
               pad_id: int) -> dict[str, float]:
    """Teacher-forced AR loss / accuracy and NAR loss / accuracy over every stage."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ar = ar_ok = ar_n = 0.0
    nar = nar_ok = nar_n = 0.0
    for start in range(0, len(pairs), VALID_BATCH):
        batch = collate(pairs[start:start + VALID_BATCH], space, pad_id, 1).to(device)
        for stage in range(1, model.config.n_q):
            out = model(replace(batch, stage=stage))
            if stage == 1:
                ar += float(out.ar_loss) * out.ar_count
                ar_ok, ar_n = ar_ok + out.ar_correct, ar_n + out.ar_count
            nar += float(out.nar_loss) * out.nar_count
            nar_ok, nar_n = nar_ok + out.nar_correct, nar_n + out.nar_count
    model.train(was_training)
    ar_loss, nar_loss = ar / max(ar_n, 1), nar / max(nar_n, 1)
    return {"valid_loss": ar_loss + nar_loss, "ar_loss": ar_loss, "nar_loss": nar_loss,
            "ar_acc": 100.0 * ar_ok / max(ar_n, 1), "nar_acc": 100.0 * nar_ok / max(nar_n, 1)}


def generate_codes(model: VALLE, text: list[int], prompt: torch.Tensor,
                   settings: CodecGenerateConfig, generator: torch.Generator,
                   max_frames: int | None = None) -> torch.Tensor:
    """Codes (n_q, T) continuing ``prompt`` to say the end of ``text``."""
    device = next(model.parameters()).device
    limit = max_frames or min(settings.max_frames,
                              max(1, int(settings.max_len_ratio * len(text))))
    return model.generate(torch.tensor(text, device=device), prompt.to(device), limit,
                          settings.temperature, settings.top_k or None, generator).cpu()


# --- training ---------------------------------------------------------------------------------


def load_valle_splits(recipe: VALLERecipe) -> tuple[dict[str, SpokenSet], str]:
    d = recipe.data
    splits, fingerprint = load_tts_words(d.max_words, d.min_letters, d.max_letters, d.voices,
                                         d.input, d.espeak, log)
    return dict(splits), fingerprint


def train_valle(recipe: VALLERecipe, out_dir: str | Path, resume: bool = False
                ) -> tuple[dict, dict[str, Any]]:
    """Train into ``out_dir``; returns the trainer summary and the best checkpoint's test
    scores (also in ``test_metrics.json``) with the paths of a few generated samples."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    codec = load_codec_run(recipe)
    splits, split_fp = load_valle_splits(recipe)
    codes = encode_splits(splits, codec, split_fp, out / CODES_NAME)
    n_q = codes["train"][0].shape[0]
    train = splits["train"]
    tokenizer = (load_tokenizer(out / "tokenizer") if resume
                 else train_tokenizer("char", [join_text(t, t) for t in train.texts]))
    torch.manual_seed(recipe.train.seed)
    model = VALLE(recipe.model_config(tokenizer.vocab_size, n_q, codec.model.config.codebook_size))
    c = model.config
    space = tokenizer.encode(" ")

    def items(name: str) -> list[Utterance]:
        data = splits[name]
        out_items = []
        for i, (text, code) in enumerate(zip(data.texts, codes[name])):
            if code.shape[1] > c.max_frames // 2:
                raise DataError(f"data.{name}: {data.sources[i]}: {code.shape[1]} code frames; "
                                f"a prompt and a target must fit model.max_frames="
                                f"{c.max_frames}; raise it")
            out_items.append(Utterance(encode_text(tokenizer, text, c.max_text // 2,
                                                   f"data.{name}"), code, data.speakers[i]))
        return out_items

    encoded = {name: items(name) for name in splits}
    frames = [u.codes.shape[1] for u in encoded["train"]]
    stream = PromptedStream(encoded["train"], recipe.data.batch_size, recipe.train.seed, space,
                            c.pad_id, n_q)
    log(f"data: {len(train)} train / {len(splits['valid'])} valid / {len(splits['test'])} test "
        f"utterances of {len(recipe.data.voices)} voice(s) (split {split_fp}); input "
        f"{recipe.data.input}, e.g. {train.sources[0]} -> {train.texts[0]!r}; codes: {n_q} "
        f"codebooks at {codec.bandwidth} kbps, {min(frames)}-{max(frames)} frames (mean "
        f"{np.mean(frames):.0f})")
    log(f"model: VALL-E {model.num_parameters() / 1e6:.2f}M parameters, d_model {c.d_model}, "
        f"AR {c.ar_layers} + NAR {c.nar_layers} layers, vocab {tokenizer.vocab_size}; "
        f"{stream.per_epoch} batches an epoch, {recipe.train.max_steps} steps")
    default = encoded["train"][0]
    settings = {"bandwidth": codec.bandwidth, "sampling_rate": codec.sampling_rate,
                "voices": list(recipe.data.voices), "input": recipe.data.input,
                "default_prompt": {"text": train.texts[0], "source": train.sources[0],
                                   "codes": default.codes.tolist()}}

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json(settings))

    if not resume:
        tokenizer.save(out / "tokenizer")
        codec.model.save(out / CODEC_DIR, {"bandwidth": codec.bandwidth})
    save_run(out)
    valid_pairs = fixed_pairs(encoded["valid"], recipe.train.seed)
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: validation(m, valid_pairs, space, c.pad_id),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, Any] = {}
    if not summary.get("interrupted"):
        speaker = CodecSpeaker.load(out, str(trainer.device))
        test = splits["test"]
        limit = recipe.data.test_utterances or len(test)
        results = speaker.evaluate(test.subset(range(min(limit, len(test)))))
        (out / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n",
                                               encoding="utf-8")
        results["samples"] = speaker.write_samples(out / "samples", SAMPLES)
    return summary, results


# --- inference --------------------------------------------------------------------------------


class CodecSpeaker:
    """A trained VALL-E with its tokenizer, its codec (the run's ``codec/`` copy) and recipe:
    ``speak`` texts in a prompt's voice, ``evaluate`` recordings."""

    def __init__(self, model: VALLE, tokenizer: Tokenizer, codec: CodecRun,
                 settings: dict[str, Any], recipe: VALLERecipe | None, run_dir: Path) -> None:
        self.model, self.tokenizer, self.codec = model.eval(), tokenizer, codec
        self.settings, self.recipe, self.run_dir = settings, recipe, run_dir
        self.generate = recipe.generate if recipe is not None else CodecGenerateConfig()
        self.voices = list(settings.get("voices") or [])
        self.input_kind = settings.get("input", "spelling")
        self.espeak = recipe.data.espeak if recipe is not None else None
        self.unknown = 0
        self.last_generated: list[np.ndarray] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> CodecSpeaker:
        run_dir = Path(run_dir)
        model = VALLE.load(run_dir, device)
        settings = dict(VALLE.read_config(run_dir).get("codec") or {})
        if not (run_dir / CODEC_DIR / "config.json").is_file():
            raise CheckpointError(f"{run_dir}: no {CODEC_DIR}/ (the codec the codes came from);"
                                  " re-train the run")
        codec = CodecRun.load(run_dir / CODEC_DIR, device)
        codec.bandwidth = float(settings.get("bandwidth") or codec.bandwidth)
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            loaded = codec_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                            str(path))
            recipe = loaded if isinstance(loaded, VALLERecipe) else None
        return cls(model, tokenizer, codec, settings, recipe, run_dir)

    @property
    def sampling_rate(self) -> int:
        return self.codec.sampling_rate

    # -- text and prompts ---------------------------------------------------------------------
    def model_texts(self, texts: Sequence[str], voices: Sequence[str] | None = None
                    ) -> list[str]:
        """What the model reads for user texts: espeak-ng phonemes (in ``voices``, one per
        text; default the run's first voice) when it was trained on phonemes, else the
        lower-cased spelling."""
        clean = [" ".join(t.split()).lower() for t in texts]
        for i, t in enumerate(clean):
            if not t:
                raise UserError(f"text {i + 1} is empty; give something to say")
        if self.input_kind == "phonemes":
            first = self.voices[0] if self.voices else "en-us"
            chosen = [v if v in self.voices else first for v in (voices or [first] * len(clean))]
            return input_texts(clean, chosen, "phonemes", self.espeak)
        return clean

    def _ids(self, text: str, where: str) -> list[int]:
        self.unknown += self.tokenizer.count_unknown(text)
        return encode_text(self.tokenizer, text, self.model.config.max_text, where)

    def default_prompt(self) -> tuple[str, torch.Tensor]:
        """The training utterance of the run's first voice saved with the run."""
        prompt = self.settings.get("default_prompt")
        if not prompt:
            raise UserError(f"{self.run_dir}: no default prompt saved; give --prompt WAV and "
                            "--prompt-text")
        return prompt["text"], torch.tensor(prompt["codes"], dtype=torch.long)

    def prompt_from_wav(self, path: str, prompt_text: str | None) -> tuple[str, torch.Tensor]:
        """(model text, codes) of a prompt recording and what it says."""
        from seqformer.decoding.vocoder import read_wav

        if not prompt_text or not prompt_text.strip():
            raise UserError("--prompt needs --prompt-text: what the prompt recording says "
                            "(VALL-E reads it before the new text)")
        samples = prepare(read_wav(path))
        if len(samples) < self.codec.model.config.hop_length:
            raise UserError(f"--prompt {path}: too short to code (under one codec frame)")
        codes = self.codec.encode(samples)
        limit = self.model.config.max_frames // 2
        if codes.shape[1] > limit:  # cutting it would leave text the codes no longer say
            rate = self.codec.model.config.frame_rate
            raise UserError(f"--prompt {path}: {codes.shape[1] / rate:.1f} s after trimming "
                            f"silence; this model takes prompts of up to {limit / rate:.1f} s "
                            f"(model.max_frames={self.model.config.max_frames}); give a "
                            "shorter one")
        return self.model_texts([prompt_text])[0], codes

    # -- generation ---------------------------------------------------------------------------
    def speak(self, texts: Sequence[str], prompt: tuple[str, torch.Tensor] | None = None,
              max_frames: int | None = None) -> list[np.ndarray]:
        """16 kHz float waveforms of each text, in the prompt's voice."""
        prompt_text, prompt_codes = prompt or self.default_prompt()
        self.unknown = 0
        generator = torch.Generator().manual_seed(self.generate.seed)
        waves = []
        for i, text in enumerate(self.model_texts(texts)):
            ids = self._ids(join_text(prompt_text, text), f"text {i + 1}")
            codes = generate_codes(self.model, ids, prompt_codes, self.generate, generator,
                                   max_frames)
            waves.append(self.codec.decode(codes) if codes.shape[1]
                         else np.zeros(0, np.float32))
        return waves

    def score_pairs(self, pairs: Sequence[tuple[list[int], torch.Tensor, list[int], np.ndarray]]
                    ) -> dict[str, float]:
        """Generate each (prompt ids, prompt codes, target ids, recording) and score it: MCD
        and length ratio against the recording, and the codec's own MCD on the recording."""
        from seqformer.tasks.tts import mel_scores

        if not pairs:
            raise DataError("nothing to evaluate: no utterances")
        features = TTSMel()
        space = self.tokenizer.encode(" ")
        generator = torch.Generator().manual_seed(self.generate.seed)
        generated, references, floor = [], [], []
        self.last_generated = []
        for prompt_ids, prompt_codes, target_ids, wave in pairs:
            codes = generate_codes(self.model, prompt_ids + space + target_ids, prompt_codes,
                                   self.generate, generator)
            audio = self.codec.decode(codes) if codes.shape[1] else np.zeros(0, np.float32)
            self.last_generated.append(audio)
            reference = features(wave)
            references.append(reference)
            generated.append(features(audio) if len(audio) >= 2 else torch.zeros(0, 80))
            resynth = self.codec.decode(self.codec.encode(wave))[:len(wave)]
            floor.append(mcd_dtw(features(resynth), reference))
        scores = mel_scores(generated, references)
        return {**scores, "codec_mcd": float(np.mean(floor))}

    def write_samples(self, directory: Path, count: int) -> list[str]:
        """The first ``count`` generations of the last scoring as WAV files."""
        from seqformer.decoding.vocoder import save_wav

        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, audio in enumerate(self.last_generated[:count]):
            path = directory / f"{i + 1:03d}.wav"
            save_wav(path, audio if len(audio) else np.zeros(1, np.float32), self.sampling_rate)
            paths.append(str(path))
        return paths

    def evaluate(self, data: SpokenSet) -> dict[str, float]:
        """MCD of generations of ``data``'s words, each prompted by another utterance of the
        same speaker in ``data`` (any other one when speakers are unknown)."""
        if len(data) == 0:
            raise DataError("nothing to evaluate: no utterances")
        words = data.words()
        speakers = list(data.speakers) or [""] * len(data)
        texts = self.model_texts(words, speakers)
        items = [Utterance(self._ids(t, f"utterance {i + 1}"), self.codec.encode(w),
                           speakers[i])
                 for i, (t, w) in enumerate(zip(texts, data.waveforms))]
        seed = self.recipe.train.seed + 1 if self.recipe is not None else 2
        pairs = fixed_pairs(items, seed)
        return self.score_pairs([(p.ids, p.codes, t.ids, w)
                                 for (p, t), w in zip(pairs, data.waveforms)])

    def round_trip(self, data: SpokenSet, transcriber: Any) -> dict[str, float]:
        """A speech-recognition run's CER (percent) on ``data``'s recordings and on the
        generations of the same words (those of the last :meth:`evaluate` of ``data``): MCD
        cannot tell a word from another word of the same voice, a recogniser can."""
        from seqformer.metrics.edit import char_error_rate

        if len(self.last_generated) != len(data):
            self.evaluate(data)
        words = data.words()
        audio = [prepare(a) if len(a) > 1 else np.zeros(1600, np.float32)
                 for a in self.last_generated]
        real = transcriber.transcribe(list(data.waveforms))
        spoken = transcriber.transcribe(audio)
        return {"asr_cer_recorded": char_error_rate(real, words),
                "asr_cer_generated": char_error_rate(spoken, words)}

    def test_split(self) -> SpokenSet | None:
        """The recipe's test split (re-made from the audio cache), or None."""
        if self.recipe is None:
            return None
        splits, fingerprint = load_valle_splits(self.recipe)
        check_same_split(self.recipe, fingerprint, self.run_dir / "recipe.yaml",
                         "give --data FILE.tsv instead")
        test = splits["test"]
        limit = self.recipe.data.test_utterances or len(test)
        return test.subset(range(min(limit, len(test))))
