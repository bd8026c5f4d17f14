"""Recipes of ``task: audio-classify`` (the Audio Spectrogram Transformer).
:func:`seqformer.recipe.recipe_from_dict` hands this task to :func:`audio_recipe_from_dict`.

Sections: ``data`` (:class:`AudioDataConfig`), ``model`` (:class:`~seqformer.models.audio.
ASTConfig` fields, including the input shape ``num_mel_bins`` x ``max_frames``; ``num_labels``
comes from the data), ``train`` (:class:`AudioTrainConfig`: by epochs, like the ViT's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError, DataError
from seqformer.models.audio import ASTConfig
from seqformer.recipe_encoder import ScratchTrainConfig

AUDIO_TASKS = ("audio-classify",)
AUDIO_CORPORA = ("speech-commands", "files")
# Metrics the validation returns, and which way is better.
AUDIO_METRICS = {"valid_loss": "min", "valid_accuracy": "max", "valid_macro_f1": "max"}


@dataclass(frozen=True)
class AudioDataConfig:
    """``corpus: speech-commands``: words synthesised by espeak-ng (``data/speech.py``):
    ``words`` x voices (``accents`` x ``variants``) x ``renditions``; ``test_variants`` and
    ``valid_variants`` voice variants are held out of training in every accent (split by
    ``split_seed``); each clip is ``clip_seconds`` long with a random time shift (``shift``) and
    white noise at an SNR in ``snr_db``, a function of ``seed``. Empty lists mean the built-in
    ones. ``corpus: files``: ``train`` (required), ``valid``, ``test`` are TSVs of
    ``path.wav<TAB>label`` or directories of ``LABEL/*.wav``; a missing ``valid`` is a seeded
    ``valid_fraction`` of train."""

    corpus: str = "speech-commands"
    words: list[str] = field(default_factory=list)
    accents: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    renditions: int = 1
    valid_variants: int = 2
    test_variants: int = 2
    split_seed: int = 0
    seed: int = 0
    clip_seconds: float = 1.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    shift: bool = True
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.corpus not in AUDIO_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: audio-classify use one "
                              f"of {', '.join(AUDIO_CORPORA)}")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (a TSV of "
                              "'path.wav<TAB>label' lines or a directory of LABEL/*.wav)")
        if self.corpus == "speech-commands" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: speech-commands splits by voice (data.split_seed)")
        if self.corpus == "speech-commands":
            from seqformer.data.speech import VARIANTS, check_words, split_variants

            try:
                if self.words:
                    check_words(self.words)
                split_variants(self.variants or VARIANTS, self.valid_variants,
                               self.test_variants, self.split_seed)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.renditions <= 9:
            raise ConfigError(f"data.renditions must be in [1, 9], got {self.renditions}")
        if not 0.1 <= self.clip_seconds <= 30:
            raise ConfigError(f"data.clip_seconds must be in [0.1, 30], got {self.clip_seconds}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"data.snr_db must be [low, high] in dB, got {list(self.snr_db)}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ConfigError(f"data.valid_fraction must be in (0, 0.5), got "
                              f"{self.valid_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")


# Kept as a name of its own for readers of this recipe; the defaults are shared.
AudioTrainConfig = ScratchTrainConfig


@dataclass(frozen=True)
class AudioRecipe:
    name: str = "ast"
    task: str = "audio-classify"
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: AudioTrainConfig = field(default_factory=AudioTrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in AUDIO_TASKS:
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(AUDIO_TASKS)}")
        check_metric(self.train.metric, self.train.metric_mode, AUDIO_METRICS, self.task)

    def model_config(self, num_labels: int) -> ASTConfig:
        return from_dict(ASTConfig, {**self.model, "num_labels": num_labels}, "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def audio_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> AudioRecipe:
    """Build and validate an audio recipe, so a bad field fails before any audio is made."""
    model_section(tree, ASTConfig, where, {"num_labels"})
    with located(where):
        recipe = from_dict(AudioRecipe, tree, where)
        recipe.model_config(2)
    return recipe
