"""Recipes of ``task: image-caption`` (the ViT + Transformer-decoder captioner).
:func:`seqformer.recipe.recipe_from_dict` hands this task to :func:`caption_recipe_from_dict`.

Sections: ``data`` (:class:`CaptionDataConfig`), ``model`` (:class:`~seqformer.models.captioner.
CaptionerConfig` fields; ``vocab_size`` comes from the tokenizer, ``image_size`` and
``channels`` from the data), ``train`` (:class:`CaptionTrainConfig`: steps-based, like the
other encoder-decoders, best checkpoint by validation BLEU) and ``decode`` (the transduction
recipe's :class:`~seqformer.recipe.DecodeConfig`: beam, alpha, penalty, max_length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError
from seqformer.models.captioner import CaptionerConfig
from seqformer.recipe import DecodeConfig
from seqformer.training.trainer import TrainConfig

CAPTION_TASKS = ("image-caption",)
CAPTION_CORPORA = ("shapes", "files")
# Metrics the validation returns, and which way is better.
CAPTION_METRICS = {"valid_loss": "min", "valid_nll": "min", "bleu": "max", "exact": "max"}


@dataclass(frozen=True)
class CaptionDataConfig:
    """``corpus: shapes``: generated scenes of one or two coloured shapes (``data/shapes.py``):
    ``train_size`` / ``valid_size`` / ``test_size`` images of ``image_size`` pixels with
    ``noise`` (+-, in 0-255 units), a function of ``split_seed``; the test split holds out
    colour-shape combinations (composition). ``corpus: files``: ``train`` (required),
    ``valid``, ``test``: TSVs of ``image_path<TAB>caption`` (PNG or .npy) or ``.npz`` files
    with ``images`` and ``captions``; a missing ``valid`` is the last ``valid_fraction`` of
    train's images. ``pixel_max`` scales pixels to [0, 1] (default: 255 for 8-bit data, else
    1). ``valid_decode``: how many validation images are decoded (greedy) for BLEU and exact
    match at each evaluation. ``tokenizer``: how captions become ids, ``word`` (whitespace:
    the shapes captions' closed vocabulary), ``char`` or ``bpe`` (of ``vocab_size``), trained
    on the training captions."""

    corpus: str = "shapes"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.1
    train_size: int = 6000
    valid_size: int = 300
    test_size: int = 500
    image_size: int = 32
    noise: int = 8
    split_seed: int = 0
    batch_size: int = 64
    valid_decode: int = 300
    pixel_max: float | None = None
    tokenizer: str = "word"
    vocab_size: int = 2000

    def __post_init__(self) -> None:
        if self.corpus not in CAPTION_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: image-caption use one "
                              f"of {', '.join(CAPTION_CORPORA)}")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (a TSV of "
                              "image_path<TAB>caption lines, or an .npz with images and "
                              "captions)")
        if self.corpus == "shapes" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: shapes generates its own splits")
        for name in ("train_size", "valid_size", "test_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 16:
            raise ConfigError(f"data.image_size must be >= 16, got {self.image_size}")
        if not 0 <= self.noise <= 64:
            raise ConfigError(f"data.noise must be in [0, 64], got {self.noise}")
        if self.tokenizer not in ("word", "char", "bpe"):
            raise ConfigError(f"data.tokenizer={self.tokenizer!r}; use word, char or bpe")
        if self.valid_decode < 0:
            raise ConfigError(f"data.valid_decode must be >= 0, got {self.valid_decode}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ConfigError(f"data.valid_fraction must be in (0, 0.5), got "
                              f"{self.valid_fraction}")
        if self.pixel_max is not None and not self.pixel_max > 0:
            raise ConfigError(f"data.pixel_max must be > 0 (or null), got {self.pixel_max}")


@dataclass(frozen=True)
class CaptionTrainConfig(TrainConfig):
    """Defaults for a small captioner trained from scratch on CPU: AdamW 1e-3 with a short
    warmup and cosine decay, best checkpoint by validation BLEU."""

    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"
    warmup_steps: int = 100
    eval_every: int = 250
    save_every: int = 0
    log_every: int = 50
    metric: str = "bleu"
    metric_mode: str = "max"


@dataclass(frozen=True)
class CaptionRecipe:
    name: str = "captioner"
    task: str = "image-caption"
    data: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in CAPTION_TASKS:
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(CAPTION_TASKS)}")
        check_metric(self.train.metric, self.train.metric_mode, CAPTION_METRICS, self.task)

    def model_config(self, vocab_size: int, image_size: int | None = None,
                     channels: int | None = None) -> CaptionerConfig:
        """The captioner config: the data's image size and channels, the tokenizer's
        vocabulary."""
        data = {k: v for k, v in (("image_size", image_size), ("channels", channels))
                if v is not None}
        return from_dict(CaptionerConfig, {**data, **self.model, "vocab_size": vocab_size},
                         "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def caption_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> CaptionRecipe:
    """Build and validate a captioning recipe, so a bad field fails before any data is read."""
    model = model_section(tree, CaptionerConfig, where,
                          {"vocab_size", "image_size", "channels", "pad_id", "bos_id",
                           "eos_id"})
    with located(where):
        recipe = from_dict(CaptionRecipe, tree, where)
        if recipe.data.corpus == "shapes":
            recipe.model_config(40, recipe.data.image_size, 3)
        else:  # the image size comes with the data: check the rest with a fitting placeholder
            patch = model.get("patch_size", 4)
            recipe.model_config(40, 4 * patch if isinstance(patch, int) and patch > 0 else 16)
    return recipe
