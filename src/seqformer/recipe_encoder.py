"""Recipes of the encoder (BERT) tasks: ``task: mlm`` pretraining and ``task: classify | tag |
qa`` fine-tuning. :func:`seqformer.recipe.recipe_from_dict` hands these tasks to
:func:`encoder_recipe_from_dict`.

Pretraining (:class:`MLMRecipe`): ``data`` (:class:`MLMDataConfig`), ``tokenizer``
(:class:`WordPieceConfig`), ``model`` (:class:`~seqformer.models.bert.BERTConfig` fields),
``train``.

Fine-tuning (:class:`FinetuneRecipe`): ``init_from`` (a pretraining run directory; the encoder
shape and tokenizer come from it), ``freeze`` (a preset, see
:func:`seqformer.models.bert.freeze_patterns`), ``data`` (:class:`FinetuneDataConfig`),
``model`` (only dropouts may change), ``train`` (:class:`FinetuneTrainConfig`: BERT's
fine-tuning defaults, lr 5e-5, weight decay 0.01, 3 epochs, linear warmup and decay).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from seqformer.config import (
    check_finetune_fields,
    check_metric,
    from_dict,
    located,
    to_dict,
    unknown_field_error,
)
from seqformer.data.fortunes import DEFAULT_CATEGORIES
from seqformer.errors import ConfigError
from seqformer.models.bert import BERTConfig, freeze_patterns
from seqformer.models.cnn import CNNClassifierConfig
from seqformer.models.rnn_classifier import RNNClassifierConfig
from seqformer.training.trainer import TrainConfig

ENCODER_TASKS = ("mlm", "classify", "tag", "qa", "distil")
MLM_SOURCES = {"fortunes": None, "web": "engWEB2015eb", "kjv": "engKJV2006eb", "files": None}
# Metrics each task's validation returns, and which way is better.
TASK_METRICS = {
    "mlm": {"valid_loss": "min", "valid_accuracy": "max"},
    "distil": {"valid_loss": "min", "valid_accuracy": "max"},
    "classify": {"valid_loss": "min", "valid_accuracy": "max", "valid_macro_f1": "max"},
    "tag": {"valid_loss": "min", "valid_f1": "max"},
    "qa": {"valid_loss": "min", "valid_exact": "max", "valid_f1": "max"},
}
# Fine-tuning may change regularisation, never the pretrained shape.
FINETUNE_MODEL_FIELDS = ("dropout", "attention_dropout")


@dataclass(frozen=True)
class MLMDataConfig:
    """Pretraining text. ``sources``: ``fortunes`` (Debian fortunes, only entries whose hash
    puts them in the fortune classifier's training split, so fine-tuning is never scored on
    text seen in pretraining), ``web`` / ``kjv`` (Bibles via SWORD, a chapter per document),
    ``files`` (the UTF-8 files in ``files``; blank lines separate documents).
    ``max_documents`` caps each source (deterministic: the first N). ``valid_percent`` of the
    documents (by hash) are held out; ``valid_examples`` caps what is scored each evaluation.
    """

    sources: list[str] = field(default_factory=lambda: ["fortunes", "web"])
    files: list[str] | None = None
    max_documents: int | None = None
    valid_percent: float = 2.0
    valid_examples: int = 256
    batch_size: int = 32
    mask_probability: float = 0.15

    def __post_init__(self) -> None:
        for source in self.sources:
            if source not in MLM_SOURCES:
                raise ConfigError(f"data.sources: {source!r}; use any of "
                                  f"{', '.join(MLM_SOURCES)}")
        if not self.sources:
            raise ConfigError("data.sources is empty; give at least one of "
                              f"{', '.join(MLM_SOURCES)}")
        if "files" in self.sources and not self.files:
            raise ConfigError("data.files is required with data.sources: [files]")
        if not 0.0 < self.valid_percent < 100.0:
            raise ConfigError(f"data.valid_percent must be in (0, 100), got {self.valid_percent}")
        if not 0.0 < self.mask_probability < 1.0:
            raise ConfigError(f"data.mask_probability must be in (0, 1), got "
                              f"{self.mask_probability}")
        for name in ("batch_size", "valid_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError(f"data.max_documents must be >= 1 or null, got "
                              f"{self.max_documents}")


@dataclass(frozen=True)
class WordPieceConfig:
    kind: str = "wordpiece"
    vocab_size: int = 8000
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if self.kind != "wordpiece":
            raise ConfigError(f"tokenizer.kind={self.kind!r}; encoder tasks use 'wordpiece'")
        if self.vocab_size <= 5 or self.min_frequency < 1:
            raise ConfigError("tokenizer: need vocab_size > 5 and min_frequency >= 1")


def _check_metric(train: TrainConfig, task: str) -> None:
    check_metric(train.metric, train.metric_mode, TASK_METRICS[task], task)


@dataclass(frozen=True)
class MLMRecipe:
    name: str = "bert-pretrain"
    task: str = "mlm"
    data: MLMDataConfig = field(default_factory=MLMDataConfig)
    tokenizer: WordPieceConfig = field(default_factory=WordPieceConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_metric(self.train, "mlm")

    def model_config(self, vocab_size: int) -> BERTConfig:
        return from_dict(BERTConfig, {**self.model, "vocab_size": vocab_size}, "recipe",
                         "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class FinetuneTrainConfig(TrainConfig):
    """BERT's fine-tuning recipe (Devlin et al., 2019, appendix A.3) as defaults.

    ``epochs`` > 0 sets ``max_steps`` to epochs x batches per epoch and ``warmup_ratio`` the
    warmup as a fraction of it; validation (and saving) runs ``evals_per_epoch`` times an
    epoch. ``epochs: 0`` uses ``max_steps``, ``warmup_steps`` and ``eval_every`` as given.
    """

    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "linear"
    warmup_steps: int = 0
    metric: str = "valid_loss"
    epochs: int = 3
    warmup_ratio: float = 0.1
    evals_per_epoch: int = 1
    save_every: int = 0
    log_every: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"train.epochs must be an integer >= 0, got {self.epochs!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.evals_per_epoch < 1:
            raise ConfigError(f"train.evals_per_epoch must be >= 1, got {self.evals_per_epoch}")

    def for_epochs(self, batches_per_epoch: int) -> TrainConfig:
        """The concrete trainer settings once the number of batches per epoch is known."""
        if not self.epochs:
            return self
        steps = self.epochs * batches_per_epoch
        return dataclasses.replace(
            self, max_steps=steps, warmup_steps=int(self.warmup_ratio * steps),
            eval_every=max(1, batches_per_epoch // self.evals_per_epoch))


@dataclass(frozen=True)
class ScratchTrainConfig(FinetuneTrainConfig):
    """By epochs like fine-tuning, with defaults for a small classifier trained from scratch
    (ViT, AST): AdamW 1e-3, weight decay 0.05, cosine decay, best checkpoint by validation
    accuracy. Fine-tuning's 5e-5 would barely move randomly initialised weights."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "cosine"
    metric: str = "valid_accuracy"
    metric_mode: str = "max"
    epochs: int = 30
    warmup_ratio: float = 0.1


@dataclass(frozen=True)
class FinetuneDataConfig:
    """Labelled examples. ``corpus: fortunes`` classifies Debian fortunes into
    ``categories`` (split by hash: about 80/10/10). ``corpus: files``: ``train`` / ``valid`` /
    ``test`` files -- classify: TSV ``text<TAB>label`` or ``text_a<TAB>text_b<TAB>label``;
    tag: CoNLL-style ``token<TAB>tag`` lines, a blank line between sentences; qa: JSON lines
    ``{"question", "context", "answers": [{"text", "answer_start"}]}`` (SQuAD v1.1 fields).
    A missing ``valid`` is carved out of ``train`` by hash (``valid_percent``). Inputs longer
    than ``max_len`` tokens (default: the model's) are truncated.
    """

    corpus: str = "fortunes"
    categories: list[str] = field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_percent: float = 10.0
    batch_size: int = 32
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.corpus not in ("fortunes", "files"):
            raise ConfigError(f"data.corpus={self.corpus!r}; use 'fortunes' or 'files'")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.valid_percent < 100.0:
            raise ConfigError(f"data.valid_percent must be in (0, 100), got "
                              f"{self.valid_percent}")


@dataclass(frozen=True)
class FinetuneRecipe:
    name: str = "finetune"
    task: str = "classify"
    init_from: str | None = None
    freeze: str = "none"
    pooling: str = "mean"  # sentence embeddings of `seqformer embed`: mean or cls
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    tokenizer: WordPieceConfig = field(default_factory=WordPieceConfig)  # from scratch only
    model: dict[str, Any] = field(default_factory=dict)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_metric(self.train, self.task)
        if self.task != "classify" and self.data.corpus == "fortunes":
            raise ConfigError(f"data.corpus: fortunes is a classification corpus; task: "
                              f"{self.task} needs data.corpus: files")
        freeze_patterns(self.freeze, 1 << 30)  # spelling only: the layer count comes later
        if self.pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling={self.pooling!r}; use 'mean' or 'cls'")
        check_finetune_fields(self.model, self.init_from, FINETUNE_MODEL_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class DistilRecipe:
    """``task: distil``: a half-depth student of the MLM run ``teacher`` (see
    :mod:`seqformer.models.distil`), trained on the same kind of text (``data``) with the
    teacher's tokenizer. ``model`` may set dropouts only."""

    name: str = "distil"
    task: str = "distil"
    teacher: str = "runs/bert-pretrain"
    temperature: float = 2.0
    alpha_kl: float = 1.0
    alpha_mlm: float = 1.0
    alpha_cos: float = 1.0
    data: MLMDataConfig = field(default_factory=MLMDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_metric(self.train, "distil")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if min(self.alpha_kl, self.alpha_mlm, self.alpha_cos) < 0:
            raise ConfigError("alpha_kl, alpha_mlm and alpha_cos must be >= 0")
        for key in self.model:
            if key not in FINETUNE_MODEL_FIELDS:
                raise ConfigError(f"model.{key}: the student's shape comes from the teacher; "
                                  f"only {', '.join(FINETUNE_MODEL_FIELDS)} may be set")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


EncoderRecipe = MLMRecipe | FinetuneRecipe | DistilRecipe
BASELINE_CLASSIFIERS = ("cnn", "rnn", "lstm", "gru")


def baseline_config_fields(recipe: Any) -> dict[str, Any]:
    """A recipe's model fields as its config class takes them: ``kind`` picks the class (a
    CNN, or a recurrent model whose ``cell`` it names and whose ``task`` is the recipe's)."""
    fields = {k: v for k, v in recipe.model.items() if k != "kind"}
    if recipe.model.get("kind") in ("rnn", "lstm", "gru"):
        fields.update(cell=recipe.model["kind"], task=recipe.task)
    return fields


def encoder_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> EncoderRecipe:
    """Build and validate an encoder recipe so a bad field fails before any data is read."""
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: model must be a mapping of fields")
    # A baseline classifier instead of a BERT encoder: Kim's CNN or a recurrent one.
    kind = model.get("kind")
    baseline = kind in BASELINE_CLASSIFIERS
    if "kind" in model and not baseline:
        raise ConfigError(f"{where}: model.kind={kind!r}; an encoder recipe takes kind: cnn "
                          "(a convolutional classifier), rnn / lstm / gru (a recurrent one) or "
                          "no kind (BERT)")
    tasks = ("classify",) if kind == "cnn" else ("classify", "tag")
    if baseline and (tree.get("task", "classify") not in tasks or tree.get("init_from")):
        raise ConfigError(f"{where}: model.kind: {kind} is a classifier trained from scratch; "
                          f"use it with task: {' or '.join(tasks)} and without init_from")
    if baseline and tree.get("freeze", "none") != "none":
        raise ConfigError(f"{where}: freeze: {tree['freeze']} names encoder layers; a "
                          f"{'CNN' if kind == 'cnn' else kind.upper()} classifier has none, use "
                          "freeze: none")
    config_class = (BERTConfig if not baseline else CNNClassifierConfig if kind == "cnn"
                    else RNNClassifierConfig)
    valid = ({f.name for f in dataclasses.fields(config_class)}
             - {"vocab_size", "num_labels", "cell", "task"})
    valid |= {"kind"} if baseline else set()
    for key in model:
        if key not in valid:
            raise unknown_field_error(key, sorted(valid), where, "model.")
    with located(where):
        if tree.get("task") == "mlm":
            recipe: EncoderRecipe = from_dict(MLMRecipe, tree, where)
            recipe.model_config(100)
        elif tree.get("task") == "distil":
            recipe = from_dict(DistilRecipe, tree, where)
        else:
            recipe = from_dict(FinetuneRecipe, tree, where)
            from_dict(config_class, {**baseline_config_fields(recipe), "vocab_size": 100},
                      where, "model.")
    return recipe
