"""Recipes of ``task: text-to-speech`` (the SpeechT5-shaped model).
:func:`seqformer.recipe.recipe_from_dict` hands this task to :func:`tts_recipe_from_dict`.

Sections: ``data`` (:class:`TTSDataConfig`), ``model`` (:class:`~seqformer.models.speecht5.
SpeechT5TTSConfig` fields; the vocabulary comes from the tokenizer, the mel size from the
features and the speaker size from ``data.voices``), ``train`` (:class:`TTSTrainConfig`) and
``speak`` (:class:`SpeakConfig`: when generation stops and how the vocoder runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError
from seqformer.training.trainer import TrainConfig

TTS_CORPORA = ("tts-words", "files")
TTS_INPUTS = ("spelling", "phonemes")
TTS_METRICS = {"valid_loss": "min", "valid_l1": "min", "mcd": "min"}
# Fields the task fills in from the data: the recipe may not set them.
DERIVED = {"vocab_size", "num_mel_bins", "speaker_embedding_dim", "pad_id", "bos_id", "eos_id"}


@dataclass(frozen=True)
class TTSDataConfig:
    """``corpus: tts-words``: CMUdict words said by each espeak-ng voice in ``voices`` (see
    ``data/tts_corpus.py``: ``max_words`` words of ``min_letters`` to ``max_letters`` letters,
    split by word like spoken-words); ``input``: the model reads the ``spelling`` or espeak-ng's
    ``phonemes`` of the word in that voice. ``corpus: files``: TSVs of
    ``path.wav<TAB>text`` (``train`` required; a missing ``valid`` is the last
    ``valid_fraction`` of train), read as spelling. ``valid_generate``: how many validation
    utterances are generated free-running at each evaluation for the MCD."""

    corpus: str = "tts-words"
    input: str = "phonemes"
    voices: list[str] = field(default_factory=lambda: ["en-us+m3"])
    max_words: int = 3000
    min_letters: int = 3
    max_letters: int = 10
    espeak: str | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.05
    batch_size: int = 32
    valid_generate: int = 64

    def __post_init__(self) -> None:
        if self.corpus not in TTS_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: text-to-speech use one "
                              f"of {', '.join(TTS_CORPORA)}")
        if self.input not in TTS_INPUTS:
            raise ConfigError(f"data.input={self.input!r}; use one of {', '.join(TTS_INPUTS)}")
        if self.corpus == "files" and self.input != "spelling":
            raise ConfigError("data.input: phonemes needs data.corpus: tts-words (a files "
                              "corpus is read as spelling)")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (a TSV of "
                              "path.wav<TAB>text lines)")
        if self.corpus == "tts-words" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: tts-words synthesises its own splits")
        if not self.voices:
            raise ConfigError("data.voices: give at least one espeak-ng voice, e.g. en-us+m3")
        for name in ("max_words", "min_letters", "max_letters", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.valid_generate < 0:
            raise ConfigError(f"data.valid_generate must be >= 0, got {self.valid_generate}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ConfigError(f"data.valid_fraction must be in (0, 0.5), got "
                              f"{self.valid_fraction}")

    @property
    def speakers(self) -> list[str]:
        """The voices a multi-voice model is told apart by (none for one voice or files)."""
        return list(self.voices) if self.corpus == "tts-words" and len(self.voices) > 1 else []


@dataclass(frozen=True)
class TTSTrainConfig(TrainConfig):
    """Defaults for a small SpeechT5 trained from scratch on CPU: AdamW 1e-3 with a short
    warmup and cosine decay, best checkpoint by the MCD of free-running generations."""

    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"
    warmup_steps: int = 200
    eval_every: int = 250
    save_every: int = 0
    log_every: int = 50
    metric: str = "mcd"
    metric_mode: str = "min"


@dataclass(frozen=True)
class SpeakConfig:
    """Generation: stop once the stop probability reaches ``threshold``; at least
    ``min_len_ratio`` and at most ``max_len_ratio`` spectrogram frames per input token;
    ``griffin_lim_iters`` iterations when the Griffin-Lim vocoder makes the waveform."""

    threshold: float = 0.5
    min_len_ratio: float = 0.0
    max_len_ratio: float = 20.0
    griffin_lim_iters: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"speak.threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.min_len_ratio < self.max_len_ratio:
            raise ConfigError("speak: need 0 <= min_len_ratio < max_len_ratio")
        if self.griffin_lim_iters < 1:
            raise ConfigError(f"speak.griffin_lim_iters must be >= 1, got "
                              f"{self.griffin_lim_iters}")


@dataclass(frozen=True)
class TTSRecipe:
    name: str = "tts"
    task: str = "text-to-speech"
    data: TTSDataConfig = field(default_factory=TTSDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TTSTrainConfig = field(default_factory=TTSTrainConfig)
    speak: SpeakConfig = field(default_factory=SpeakConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task != "text-to-speech":
            raise ConfigError(f"task={self.task!r}; this recipe class is for text-to-speech")
        check_metric(self.train.metric, self.train.metric_mode, TTS_METRICS, self.task)

    def model_config(self, vocab_size: int, num_mel_bins: int) -> Any:
        from seqformer.models.speecht5 import SpeechT5TTSConfig

        return from_dict(SpeechT5TTSConfig,
                         {**self.model, "vocab_size": vocab_size, "num_mel_bins": num_mel_bins,
                          "speaker_embedding_dim": len(self.data.speakers)},
                         "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def tts_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> TTSRecipe:
    """Build and validate a text-to-speech recipe, so a bad field fails before any audio is
    made."""
    from seqformer.models.speecht5 import SpeechT5TTSConfig

    model_section(tree, SpeechT5TTSConfig, where, DERIVED)
    with located(where):
        recipe = from_dict(TTSRecipe, tree, where)
        recipe.model_config(40, 80)  # value checks need only placeholder sizes
    return recipe
