"""Recipes of the self-supervised speech tasks: ``task: speech-pretrain`` (a wav2vec 2.0-shaped
encoder learns from unlabelled audio) and ``task: speech-ctc`` (that encoder, or a fresh one,
fine-tuned with a CTC head to transcribe). :func:`seqformer.recipe.recipe_from_dict` hands these
tasks to :func:`ssl_recipe_from_dict`.

Pretraining (:class:`PretrainRecipe`): ``data`` (the speech-to-text corpus settings,
:class:`~seqformer.recipe_speech.SpeechDataConfig`: only the train split's audio is used, never
its transcripts, and the held-out voices and words stay unheard), ``model``
(:class:`~seqformer.models.wav2vec2.Wav2Vec2Config` fields; ``objective`` picks wav2vec 2.0's
contrastive task, HuBERT's masked prediction of ``units``, a Mockingjay-style reconstruction
of masked frames, or ``w2v-bert``: contrastive in the lower ``contrastive_layers``, masked
prediction of the quantizer's codes at the top, weighted by ``mlm_weight``), ``units``
(:class:`UnitsConfig`, HuBERT's k-means targets: MFCC frames, or a previous run's hidden
states for HuBERT's second iteration), ``train``. DiscreteBERT is ``model.frontend: units``
with ``objective: units``: the encoder reads ``units_k`` k-means units of MFCC frames instead
of the conv features and predicts the masked ones (``num_units`` = ``units_k``: the targets
are the input units); its k-means uses ``units``' iterations, max_frames and seed.

Fine-tuning (:class:`CTCRecipe`): ``init_from`` (a pretraining run; the encoder's shape comes
from it), ``freeze`` (``feature-encoder``, as wav2vec 2.0 fine-tuning does, or ``none``),
``data`` (the same corpus settings; transcripts are the targets), ``model`` (dropouts only with
``init_from``; every shape field without), ``train``, ``decode`` (:class:`CTCDecodeConfig`).
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
from seqformer.errors import ConfigError
from seqformer.models.wav2vec2 import CONTRASTIVE_OBJECTIVES, Wav2Vec2Config
from seqformer.recipe_speech import SpeechDataConfig, SpeechTrainConfig

SSL_TASKS = ("speech-pretrain", "speech-ctc")
PRETRAIN_METRICS = {"valid_loss": "min", "valid_accuracy": "max"}
CTC_METRICS = {"valid_loss": "min", "cer": "min", "wer": "min"}
FREEZE_PRESETS = ("none", "feature-encoder")
# Fine-tuning a pretrained encoder may change regularisation and masking, never its shape.
FINETUNE_MODEL_FIELDS = ("dropout", "attention_dropout", "activation_dropout",
                         "feat_proj_dropout", "final_dropout", "mask_time_prob",
                         "mask_time_length")
# Fields the task fills in: the CTC vocabulary from the tokenizer, the label count and the
# reconstruction target size from the data.
DERIVED_FIELDS = {"vocab_size", "num_labels", "target_dim"}


@dataclass(frozen=True)
class UnitsConfig:
    """HuBERT's targets (``model.objective: units``). First iteration: MFCC frames (13
    coefficients with deltas, aligned with the encoder's 20 ms frames). Second iteration
    (``from_run``: a previous speech-pretrain run of any objective, or an imported wav2vec2
    encoder): the hidden states after encoder layer ``layer`` of that run (1 = the first
    layer's output; default: the middle layer, HuBERT's 6 of 12), computed in eval mode over
    the training audio; the new run needs the same conv layout, so the frames coincide.
    Either way the features are standardised and clustered by k-means into
    ``model.num_units`` units with ``iterations`` Lloyd steps on at most ``max_frames`` frames
    drawn with ``seed``. The centroids are saved in the run (``units.safetensors``; what was
    clustered in ``units.json``) so fine-tuning and analysis can repeat the labelling. A unit
    front end (``model.frontend: units``) is fitted with the same settings; its centroids are
    buffers of the model itself (``model.safetensors``)."""

    iterations: int = 30
    max_frames: int = 100_000
    seed: int = 0
    from_run: str | None = None
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"units.iterations must be >= 1, got {self.iterations}")
        if self.max_frames < 100:
            raise ConfigError(f"units.max_frames must be >= 100, got {self.max_frames}")
        if self.layer is not None and self.from_run is None:
            raise ConfigError(f"units.layer={self.layer}: the layer of which encoder? Set "
                              "units.from_run to the run whose hidden states are clustered")
        if self.layer is not None and self.layer < 1:
            raise ConfigError(f"units.layer must be >= 1 (the output of that encoder layer), "
                              f"got {self.layer}")


@dataclass(frozen=True)
class PretrainTrainConfig(SpeechTrainConfig):
    """The speech task's CPU-scale schedule (warmup, cosine decay) at half its rate -- the
    masked objectives diverge more easily than supervised training -- and the best checkpoint
    by the objective's loss on the masked frames of held-out voices."""

    lr: float = 5e-4
    metric: str = "valid_loss"
    metric_mode: str = "min"


@dataclass(frozen=True)
class CTCDecodeConfig:
    """``beam`` 1: greedy (best path, repeats collapsed, blanks dropped); above 1: CTC prefix
    beam search, which sums the alignments of each labelling instead of trusting one path."""

    beam: int = 1

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ConfigError(f"decode.beam must be >= 1, got {self.beam}")


@dataclass(frozen=True)
class PretrainRecipe:
    name: str = "wav2vec2-pretrain"
    task: str = "speech-pretrain"
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    units: UnitsConfig = field(default_factory=UnitsConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_metric(self.train.metric, self.train.metric_mode, PRETRAIN_METRICS, self.task)

    def model_config(self, target_dim: int = 0) -> Wav2Vec2Config:
        return from_dict(Wav2Vec2Config, {**self.model, "target_dim": target_dim}, "recipe",
                         "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class CTCRecipe:
    name: str = "wav2vec2-ctc"
    task: str = "speech-ctc"
    init_from: str | None = None
    freeze: str = "feature-encoder"
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: SpeechTrainConfig = field(default_factory=SpeechTrainConfig)
    decode: CTCDecodeConfig = field(default_factory=CTCDecodeConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_metric(self.train.metric, self.train.metric_mode, CTC_METRICS, self.task)
        if self.freeze not in FREEZE_PRESETS:
            raise ConfigError(f"freeze={self.freeze!r}; use one of {', '.join(FREEZE_PRESETS)}")
        check_finetune_fields(self.model, self.init_from, FINETUNE_MODEL_FIELDS)

    def model_config(self, vocab_size: int, base: dict[str, Any] | None = None
                     ) -> Wav2Vec2Config:
        """The CTC model's shape: ``base`` (the pretraining run's config, when fine-tuning)
        with the recipe's ``model`` overrides and the tokenizer's vocabulary."""
        return from_dict(Wav2Vec2Config, {**(base or {}), **self.model,
                                           "vocab_size": vocab_size}, "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


SSLRecipe = PretrainRecipe | CTCRecipe


def check_unit_front_end(config: Wav2Vec2Config, units: UnitsConfig) -> None:
    """A pretraining recipe's unit front end (``model.frontend: units``) against its
    objective, before any audio is made: the contrastive objectives need conv features, and
    DiscreteBERT's targets are its input units, so without ``units.from_run`` the target and
    input vocabularies are one (``num_units`` = ``units_k``)."""
    if config.frontend != "units":
        return
    if config.objective in CONTRASTIVE_OBJECTIVES:
        raise ConfigError(f"model.frontend=units: objective {config.objective} quantises the "
                          "conv features, which a unit front end does not have; use objective "
                          "units (DiscreteBERT) or reconstruct")
    if (config.objective == "units" and units.from_run is None
            and config.num_units != config.units_k):
        raise ConfigError(f"model.num_units={config.num_units} but model.units_k="
                          f"{config.units_k}: with model.frontend=units the targets are the "
                          "input units (DiscreteBERT); set num_units to units_k")


def ssl_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> SSLRecipe:
    """Build and validate a self-supervised speech recipe, so a bad field fails before any
    audio is synthesised."""
    task = tree.get("task")
    if task not in SSL_TASKS:
        raise ConfigError(f"{where}: task={task!r}; use one of {', '.join(SSL_TASKS)}")
    model_section(tree, Wav2Vec2Config, where, DERIVED_FIELDS)
    with located(where):
        if task == "speech-pretrain":
            recipe: SSLRecipe = from_dict(PretrainRecipe, tree, where)
            config = recipe.model_config()
            if config.objective == "units" and config.num_units < 2:
                raise ConfigError("model.num_units: objective units (HuBERT) needs the number "
                                  "of k-means units, e.g. 50")
            if recipe.units.from_run is not None and config.objective != "units":
                raise ConfigError(f"units.from_run: only objective units (HuBERT) trains on "
                                  f"k-means units, not objective {config.objective}")
            check_unit_front_end(config, recipe.units)
        else:
            recipe = from_dict(CTCRecipe, tree, where)
            if recipe.init_from is None:
                recipe.model_config(40)  # value checks need only a placeholder vocabulary
    return recipe

