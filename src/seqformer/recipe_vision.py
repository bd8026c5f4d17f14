"""Recipes of ``task: image-classify`` (the Vision Transformer). :func:`seqformer.recipe.
recipe_from_dict` hands this task to :func:`vision_recipe_from_dict`.

Sections: ``data`` (:class:`VisionDataConfig`), ``model`` (:class:`~seqformer.models.vit.
ViTConfig` fields; ``num_labels`` comes from the data, ``image_size`` and ``channels`` default
to the data's), ``train`` (:class:`VisionTrainConfig`: epochs-based, like fine-tuning, with
defaults for a ViT trained from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError
from seqformer.models.vit import ViTConfig
from seqformer.recipe_encoder import ScratchTrainConfig

VISION_TASKS = ("image-classify",)
VISION_CORPORA = ("digits", "files")
# Metrics the validation returns, and which way is better.
VISION_METRICS = {"valid_loss": "min", "valid_accuracy": "max", "valid_macro_f1": "max"}


@dataclass(frozen=True)
class VisionDataConfig:
    """``corpus: digits``: scikit-learn's 8x8 handwritten digits, split stratified by class
    into ``test_fraction`` test, ``valid_fraction`` valid and the rest train, a function of
    ``split_seed``. ``corpus: files``: ``.npz`` files ``train`` (required), ``valid``, ``test``
    with arrays ``images`` (N, H, W) or (N, C, H, W) and ``labels`` (N,); a missing ``valid`` is
    carved out of ``train`` (``valid_fraction``). ``pixel_max`` scales pixels to [0, 1]
    (default: 16 for digits, 255 for uint8 images, else 1)."""

    corpus: str = "digits"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64
    pixel_max: float | None = None

    def __post_init__(self) -> None:
        if self.corpus not in VISION_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: image-classify use one "
                              f"of {', '.join(VISION_CORPORA)}")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (an .npz file "
                              "with arrays images and labels)")
        if self.corpus == "digits" and (self.train or self.valid or self.test):
            raise ConfigError("data.train/valid/test are files for data.corpus: files; "
                              "corpus: digits splits by data.split_seed")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ConfigError(f"data.{name} must be in (0, 0.5), got "
                                  f"{getattr(self, name)}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.pixel_max is not None and not self.pixel_max > 0:
            raise ConfigError(f"data.pixel_max must be > 0 (or null), got {self.pixel_max}")


# Kept as a name of its own for readers of this recipe; the defaults are shared.
VisionTrainConfig = ScratchTrainConfig


@dataclass(frozen=True)
class VisionRecipe:
    name: str = "vit"
    task: str = "image-classify"
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: VisionTrainConfig = field(default_factory=VisionTrainConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in VISION_TASKS:
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(VISION_TASKS)}")
        check_metric(self.train.metric, self.train.metric_mode, VISION_METRICS, self.task)

    def model_config(self, num_labels: int, image_size: int | None = None,
                     channels: int | None = None) -> ViTConfig:
        """The ViT config: the data's image size and channels unless the recipe sets them."""
        data = {k: v for k, v in (("image_size", image_size), ("channels", channels))
                if v is not None}
        return from_dict(ViTConfig, {**data, **self.model, "num_labels": num_labels},
                         "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def vision_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> VisionRecipe:
    """Build and validate a vision recipe, so a bad field fails before any data is read."""
    model = model_section(tree, ViTConfig, where, {"num_labels"})
    with located(where):
        recipe = from_dict(VisionRecipe, tree, where)
        if recipe.data.corpus == "digits":
            recipe.model_config(10, 8, 1)
        else:  # the image size comes with the data: check the rest with a fitting placeholder
            patch = model.get("patch_size", 2)
            recipe.model_config(10, 4 * patch if isinstance(patch, int) and patch > 0 else 8)
    return recipe
