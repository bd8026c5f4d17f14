"""Recipes of ``task: speech-to-text`` (the Whisper-shaped model). :func:`seqformer.recipe.
recipe_from_dict` hands this task to :func:`speech_recipe_from_dict`.

Sections: ``data`` (:class:`SpeechDataConfig`), ``model`` (:class:`~seqformer.models.whisper.
WhisperConfig` fields; ``vocab_size`` comes from the tokenizer and ``num_mel_bins`` from
``data.n_mels``), ``train`` (:class:`SpeechTrainConfig`) and ``decode`` (the transduction
recipe's :class:`~seqformer.recipe.DecodeConfig`: beam, alpha, penalty, max_length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError
from seqformer.models.whisper import WhisperConfig
from seqformer.recipe import DecodeConfig
from seqformer.training.trainer import TrainConfig

SPEECH_TASKS = ("speech-to-text",)
SPEECH_CORPORA = ("spoken-words", "files")
SPEECH_TARGETS = ("spelling", "phonemes")
SPEECH_METRICS = {"valid_loss": "min", "valid_nll": "min", "cer": "min", "wer": "min"}


@dataclass(frozen=True)
class SpeechDataConfig:
    """``corpus: spoken-words``: CMUdict words synthesised by espeak-ng (see
    ``data/spoken_words.py`` for every field: ``max_words`` words of ``min_letters`` to
    ``max_letters`` letters, ``voices_per_word`` voices each, ``valid_variants`` /
    ``test_variants`` voice variants held out, ``split_seed``). ``espeak`` names the program
    to run (default ``$SEQFORMER_ESPEAK`` or espeak-ng on PATH). ``corpus: files``: TSVs of
    ``path.wav<TAB>transcript`` (``train`` required; a missing ``valid`` is the last
    ``valid_fraction`` of train). ``n_mels`` is the log-mel size; ``valid_decode`` how many
    validation utterances are decoded (greedy) for CER/WER at each evaluation. ``target``
    (spoken-words only): ``spelling`` (the word) or ``phonemes`` (espeak-ng's ``-x`` phoneme
    mnemonics of the word in the voice that said it; CER is then a phoneme-character error
    rate and WER the share of words with any phoneme error). ``train_utterances`` (0: all)
    keeps that many training utterances, a seeded subset, with valid and test unchanged: the
    few-labels setting in which self-supervised pretraining is measured (wav2vec 2.0's 10 min /
    1 h / 10 h subsets)."""

    corpus: str = "spoken-words"
    target: str = "spelling"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.05
    max_words: int = 1500
    min_letters: int = 3
    max_letters: int = 10
    accents: list[str] = field(default_factory=lambda: ["en", "en-us", "en-gb-x-rp",
                                                        "en-gb-scotland", "en-029"])
    voices_per_word: int = 3
    valid_variants: int = 2
    test_variants: int = 2
    split_seed: int = 0
    espeak: str | None = None
    n_mels: int = 80
    batch_size: int = 32
    valid_decode: int = 200
    train_utterances: int = 0

    def __post_init__(self) -> None:
        if self.corpus not in SPEECH_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: speech-to-text use one "
                              f"of {', '.join(SPEECH_CORPORA)}")
        if self.target not in SPEECH_TARGETS:
            raise ConfigError(f"data.target={self.target!r}; use one of "
                              f"{', '.join(SPEECH_TARGETS)}")
        if self.corpus == "files" and self.target != "spelling":
            raise ConfigError("data.target: phonemes needs data.corpus: spoken-words (a files "
                              "corpus has its own transcripts)")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (a TSV of "
                              "path.wav<TAB>transcript lines)")
        if self.corpus == "spoken-words" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: spoken-words synthesises its own splits")
        for name in ("max_words", "min_letters", "max_letters", "voices_per_word",
                     "valid_variants", "test_variants", "n_mels", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.train_utterances < 0:
            raise ConfigError(f"data.train_utterances must be >= 0 (0: all), got "
                              f"{self.train_utterances}")
        if self.valid_decode < 0:
            raise ConfigError(f"data.valid_decode must be >= 0, got {self.valid_decode}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ConfigError(f"data.valid_fraction must be in (0, 0.5), got "
                              f"{self.valid_fraction}")


@dataclass(frozen=True)
class SpeechTrainConfig(TrainConfig):
    """Defaults for a small Whisper trained from scratch on CPU: AdamW 1e-3 with a short
    warmup and cosine decay, best checkpoint by validation CER."""

    max_steps: int = 1500
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"
    warmup_steps: int = 150
    eval_every: int = 250
    save_every: int = 0
    log_every: int = 50
    metric: str = "cer"
    metric_mode: str = "min"


@dataclass(frozen=True)
class SpeechRecipe:
    name: str = "whisper"
    task: str = "speech-to-text"
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: SpeechTrainConfig = field(default_factory=SpeechTrainConfig)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(beam=5))
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in SPEECH_TASKS:
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(SPEECH_TASKS)}")
        check_metric(self.train.metric, self.train.metric_mode, SPEECH_METRICS, self.task)

    def model_config(self, vocab_size: int) -> WhisperConfig:
        return from_dict(WhisperConfig, {"num_mel_bins": self.data.n_mels, **self.model,
                                         "vocab_size": vocab_size}, "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def speech_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> SpeechRecipe:
    """Build and validate a speech recipe, so a bad field fails before any audio is made."""
    model_section(tree, WhisperConfig, where,
                  {"vocab_size", "num_mel_bins", "pad_id", "bos_id", "eos_id"})
    with located(where):
        recipe = from_dict(SpeechRecipe, tree, where)
        recipe.model_config(40)  # value checks need only a placeholder vocabulary
    return recipe
