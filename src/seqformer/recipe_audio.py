"""Recipes of ``task: audio-classify``: the Audio Spectrogram Transformer (``model.kind: ast``,
the default), a wav2vec 2.0 / HuBERT encoder with a classification head (``kind: wav2vec2``),
or the hand-crafted baseline, a small MLP on openSMILE functionals (``kind: opensmile``).
:func:`seqformer.recipe.recipe_from_dict` hands this task to :func:`audio_recipe_from_dict`.

Sections: ``data`` (:class:`AudioDataConfig`), ``model`` (``kind`` and the fields of
:class:`~seqformer.models.audio.ASTConfig` -- including the input shape ``num_mel_bins`` x
``max_frames`` --, of :class:`~seqformer.models.wav2vec2.Wav2Vec2Config` or of
:class:`~seqformer.models.smile.SmileClassifierConfig` -- ``feature_set``, ``hidden_sizes``,
``dropout``; ``num_labels`` comes from the data), ``train`` (:class:`AudioTrainConfig`: by
epochs, like the ViT's). ``kind: opensmile`` needs the ``opensmile`` package (the
``seqformer[opensmile]`` extra), checked when training starts, not when the recipe is read.

``kind: wav2vec2`` only: ``init_from`` (a ``speech-pretrain`` run, an imported HF wav2vec2 /
HuBERT encoder or another wav2vec2-family run: the encoder's shape and weights come from it, so
``model`` may then set only :data:`FINETUNE_FIELDS`) and ``freeze`` (``feature-encoder``, the
default with ``init_from`` as in wav2vec 2.0 fine-tuning, or ``none``, the default without).
``model.mask_time_prob`` defaults to 0.05 (HF's fine-tuning value), not the pretraining 0.65.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import (
    check_finetune_fields,
    check_metric,
    from_dict,
    located,
    model_section,
    to_dict,
)
from seqformer.errors import ConfigError, DataError
from seqformer.models.audio import ASTConfig
from seqformer.models.smile import SmileClassifierConfig
from seqformer.models.wav2vec2 import Wav2Vec2Config
from seqformer.recipe_encoder import ScratchTrainConfig
from seqformer.recipe_ssl import FINETUNE_MODEL_FIELDS, FREEZE_PRESETS

AUDIO_TASKS = ("audio-classify",)
MODEL_KINDS = ("ast", "wav2vec2", "opensmile")
# What a recipe may set on an encoder that comes from init_from: regularisation, masking and
# the head's projection, never the encoder's shape.
FINETUNE_FIELDS = (*FINETUNE_MODEL_FIELDS, "classifier_proj_size")
# Filled in by the task (num_labels from the data) or meaningless for a classifier.
WAV2VEC2_DERIVED = {"num_labels", "vocab_size", "target_dim"}
# The openSMILE classifier's: from the data, and from model.feature_set.
SMILE_DERIVED = {"num_labels", "num_features"}
# wav2vec 2.0's fine-tuning mask rate (HF Wav2Vec2Config's default), unless model sets one.
FINETUNE_MASK_TIME_PROB = 0.05
AUDIO_CORPORA = ("speech-commands", "files")
# What a speech-commands clip is labelled with: the word, the sex of the espeak-ng voice
# variant (m1..m7 male, f1..f5 female) or the voice's accent (en-us, en-gb-scotland, ...):
# paralinguistic tasks on the same clips, accent ID standing in for language identification.
AUDIO_LABELS = ("word", "voice-sex", "accent")
# Metrics the validation returns, and which way is better.
AUDIO_METRICS = {"valid_loss": "min", "valid_accuracy": "max", "valid_macro_f1": "max"}


@dataclass(frozen=True)
class AudioDataConfig:
    """``corpus: speech-commands``: words synthesised by espeak-ng (``data/speech.py``):
    ``words`` x voices (``accents`` x ``variants``) x ``renditions``; ``test_variants`` and
    ``valid_variants`` voice variants are held out of training in every accent (split by
    ``split_seed``); each clip is ``clip_seconds`` long with a random time shift (``shift``) and
    white noise at an SNR in ``snr_db``, a function of ``seed``. Empty lists mean the built-in
    ones. ``label``: ``word`` (the default), ``voice-sex`` (``male`` / ``female`` from the
    voice variant; every split needs both: hold out two variants for each, the default, as
    the split takes males and females in turn) or ``accent`` (the voice's espeak-ng accent;
    every split has every accent, spoken by variants never heard in training). ``corpus:
    files``: ``train`` (required), ``valid``, ``test`` are TSVs of ``path.wav<TAB>label`` or
    directories of ``LABEL/*.wav``; a missing ``valid`` is a seeded
    ``valid_fraction`` of train."""

    corpus: str = "speech-commands"
    label: str = "word"
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
        if self.label == "accent" and len(self.accents) == 1:
            raise ConfigError("data.label: accent needs two accents or more in data.accents "
                              "(empty: all eight)")
        if self.label not in AUDIO_LABELS:
            raise ConfigError(f"data.label={self.label!r}; use one of {', '.join(AUDIO_LABELS)}")
        if self.label != "word" and self.corpus != "speech-commands":
            raise ConfigError(f"data.label: {self.label} labels the built-in speech-commands "
                              "clips; with data.corpus: files the labels are the TSV's")
        if self.corpus == "speech-commands" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: speech-commands splits by voice (data.split_seed)")
        if self.corpus == "speech-commands":
            from seqformer.data.speech import VARIANTS, check_words, split_variants

            try:
                if self.words:
                    check_words(self.words)
                groups = split_variants(self.variants or VARIANTS, self.valid_variants,
                                        self.test_variants, self.split_seed)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
            for name, held in groups.items():
                if self.label == "voice-sex" and len({v[:1] for v in held}) < 2:
                    raise ConfigError(f"data.label: voice-sex needs male (m*) and female (f*) "
                                      f"voices in every split; {name} has only "
                                      f"{', '.join(held)} (hold out 2 variants for valid and "
                                      "for test, and give data.variants of both sexes)")
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
    init_from: str | None = None
    # "auto": feature-encoder with init_from, none without. Not Optional: --set's "none" would
    # become None and silently mean the default.
    freeze: str = "auto"
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: AudioTrainConfig = field(default_factory=AudioTrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in AUDIO_TASKS:
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(AUDIO_TASKS)}")
        check_metric(self.train.metric, self.train.metric_mode, AUDIO_METRICS, self.task)
        kind = self.kind
        if kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind={kind!r}; use one of {', '.join(MODEL_KINDS)}")
        if self.freeze != "auto" and self.freeze not in FREEZE_PRESETS:
            raise ConfigError(f"freeze={self.freeze!r}; use one of {', '.join(FREEZE_PRESETS)}")
        if kind != "wav2vec2" and self.init_from is not None:
            raise ConfigError(f"init_from={self.init_from}: a pretrained encoder needs "
                              f"model.kind: wav2vec2; model.kind: {kind} trains from scratch")
        if kind != "wav2vec2" and self.freeze not in ("auto", "none"):
            raise ConfigError(f"freeze: {self.freeze} names wav2vec2 modules; use it with "
                              "model.kind: wav2vec2")
        check_finetune_fields(self.model, self.init_from, FINETUNE_FIELDS, ignored=("kind",))

    @property
    def kind(self) -> str:
        return str(self.model.get("kind", "ast"))

    @property
    def freeze_preset(self) -> str:
        """``freeze`` as given, else (``auto``) ``feature-encoder`` with ``init_from`` and
        ``none`` without."""
        if self.freeze != "auto":
            return self.freeze
        return "feature-encoder" if self.init_from else "none"

    def model_config(self, num_labels: int, base: dict[str, Any] | None = None
                     ) -> ASTConfig | Wav2Vec2Config | SmileClassifierConfig:
        """The model's shape with the data's ``num_labels``: an :class:`ASTConfig`, a
        :class:`SmileClassifierConfig` for ``kind: opensmile``, or for ``kind: wav2vec2`` a
        :class:`Wav2Vec2Config` -- ``base`` (the ``init_from`` run's config, when fine-tuning)
        with the recipe's ``model`` fields over it."""
        fields = {k: v for k, v in self.model.items() if k != "kind"}
        if self.kind == "ast":
            return from_dict(ASTConfig, {**fields, "num_labels": num_labels}, "recipe",
                             "model.")
        if self.kind == "opensmile":
            return from_dict(SmileClassifierConfig, {**fields, "num_labels": num_labels},
                             "recipe", "model.")
        base = {k: v for k, v in (base or {}).items() if k not in WAV2VEC2_DERIVED}
        return from_dict(Wav2Vec2Config, {**base, "mask_time_prob": FINETUNE_MASK_TIME_PROB,
                                          **fields, "num_labels": num_labels},
                         "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self)
        for key, unset in (("init_from", None), ("freeze", "auto")):  # AST recipes: as before
            if data[key] == unset:
                del data[key]
        if data["data"].get("label") == "word":
            del data["data"]["label"]
        return data


def audio_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> AudioRecipe:
    """Build and validate an audio recipe, so a bad field fails before any audio is made."""
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: model must be a mapping of fields")
    kind = model.get("kind", "ast")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{where}: model.kind={kind!r}; use one of {', '.join(MODEL_KINDS)}")
    fields = {k: v for k, v in model.items() if k != "kind"}
    if kind == "ast":
        model_section({**tree, "model": fields}, ASTConfig, where, {"num_labels"})
    elif kind == "opensmile":
        model_section({**tree, "model": fields}, SmileClassifierConfig, where, SMILE_DERIVED)
    else:
        model_section({**tree, "model": fields}, Wav2Vec2Config, where, WAV2VEC2_DERIVED)
    with located(where):
        recipe = from_dict(AudioRecipe, tree, where)
        # Value checks; with init_from the shape is the run's, read when training starts.
        recipe.model_config(2)
    return recipe
