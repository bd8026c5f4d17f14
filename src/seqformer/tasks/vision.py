"""Image classification with the Vision Transformer (``task: image-classify``).

The task owns what the trainer must not know: reading and splitting the images, the label
names, the pixel preprocessing (fitted on the training split and saved in ``config.json`` as
``preprocess``), the validation metrics (loss, accuracy, macro-F1) and the run directory
(``config.json`` with ``family: vit``, ``recipe.yaml``, ``model.safetensors``).
:class:`ImageClassifier` is the inference side: ``ImageClassifier.load(run).predict(images)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seqformer.data.images import (
    ImageSet,
    ImageStream,
    Preprocess,
    load_digits_splits,
    read_npz,
    stratified_split,
)
from seqformer.errors import DataError
from seqformer.models.vit import ImageBatch, ViT, read_vit_config
from seqformer.recipe_vision import VisionRecipe, vision_recipe_from_dict
from seqformer.tasks import classify
from seqformer.tasks.rundir import log, recipe_if_saved

EVAL_BATCH = 256


def load_image_splits(recipe: VisionRecipe) -> dict[str, ImageSet | None]:
    """train / valid / test image sets of the recipe (test may be None for files)."""
    d = recipe.data
    if d.corpus == "digits":
        return dict(load_digits_splits(d.split_seed, d.valid_fraction, d.test_fraction))
    train = read_npz(d.train, "data.train")
    if d.valid:
        valid = read_npz(d.valid, "data.valid")
    else:
        train, valid = stratified_split(train, d.valid_fraction, d.split_seed, str(d.train))
    test = read_npz(d.test, "data.test") if d.test else None
    return {"train": train, "valid": valid, "test": test}


def label_names(train: ImageSet) -> list[str]:
    """Sorted distinct training labels (numerically for numbers), as strings."""
    return [str(x) for x in np.unique(train.labels)]


def label_ids(data: ImageSet, labels: list[str], where: str) -> torch.Tensor:
    return classify.label_ids(data.labels, labels, where)


def check_shape(data: ImageSet, model: ViT, where: str) -> None:
    c = model.config
    want = (c.channels, c.image_size, c.image_size)
    if tuple(data.images.shape[1:]) != want:
        raise DataError(f"{where}: images are (C, H, W) = {tuple(data.images.shape[1:])} but "
                        f"the model takes {want}; resize the images or set model.image_size / "
                        "model.channels to match")


def image_metrics(model: ViT, pixels: torch.Tensor, labels: torch.Tensor,
                  prefix: str = "valid_") -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on normalised ``pixels``."""
    return classify.metrics(model, ImageBatch, pixels, labels, EVAL_BATCH, prefix)


def _fingerprint(splits: dict[str, ImageSet | None]) -> str:
    return classify.fingerprint(splits, lambda data: (
        np.ascontiguousarray(data.images).tobytes(),
        json.dumps([str(x) for x in data.labels]).encode()))


def train_image_classifier(recipe: VisionRecipe, out_dir: str | Path, resume: bool = False
                           ) -> tuple[dict, dict[str, float]]:
    """Train a ViT into ``out_dir``; returns the trainer summary and the test metrics (empty
    without a test split), which are also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    splits = load_image_splits(recipe)
    train = splits["train"]
    assert train is not None
    labels = label_names(train)
    classify.check_classes(labels)
    _, _, height, width = train.images.shape
    if height != width:
        raise DataError(f"data.train: images are {height}x{width}; the ViT takes square "
                        "images, pad or crop them")
    torch.manual_seed(recipe.train.seed)
    model = ViT(recipe.model_config(len(labels), height, train.images.shape[1]), labels)
    preprocess = Preprocess.fit(train.images, recipe.data.pixel_max or train.pixel_max)
    encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, data in splits.items():
        if data is not None:
            check_shape(data, model, f"data.{name}")
            encoded[name] = (preprocess(data.images), label_ids(data, labels, f"data.{name}"))
    pixels, ids = encoded["train"]
    stream = ImageStream(list(zip(pixels, ids.tolist())), recipe.data.batch_size,
                         recipe.train.seed)
    train_config = recipe.train.for_epochs(stream.per_epoch)
    c = model.config
    log(f"model: ViT {model.num_parameters() / 1e6:.2f}M parameters, {c.num_patches} patches "
        f"of {c.patch_size}x{c.patch_size}, {c.layers} layers, d_model {c.d_model}; "
        + ", ".join(f"{len(v[1])} {k}" for k, v in encoded.items())
        + f" images, {len(labels)} classes; {train_config.max_steps} steps")
    return classify.train_and_test(model, recipe, preprocess.to_dict(), _fingerprint(splits),
                                   stream, train_config, encoded, image_metrics, out, resume)


class ImageClassifier(classify.Classifier):
    """A trained ViT with its preprocessing and label names."""

    batch_size = EVAL_BATCH
    data_file = "FILE.npz"

    def __init__(self, model: ViT, preprocess: Preprocess, recipe: VisionRecipe | None = None
                 ) -> None:
        super().__init__(model, recipe)
        self.preprocess = preprocess

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> ImageClassifier:
        run_dir = Path(run_dir)
        data = read_vit_config(run_dir)
        model = ViT.load(run_dir, device)
        pre = data.get("preprocess") or {"pixel_max": 1.0, "mean": [0.0] * model.config.channels,
                                         "std": [1.0] * model.config.channels}
        classifier = cls(model, Preprocess(float(pre["pixel_max"]), list(pre["mean"]),
                                           list(pre["std"])),
                         recipe_if_saved(run_dir, vision_recipe_from_dict))
        classifier.run_dir = run_dir
        return classifier

    def inputs(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised pixels of raw images (N, H, W) or (N, C, H, W), in the pixel units the
        model was trained on (e.g. 0-16 for digits); ``logits`` / ``predict`` take those."""
        return self.preprocess(images)

    def evaluate(self, data: ImageSet, where: str = "--data") -> dict[str, float]:
        """loss, accuracy and macro-F1 on raw labelled images."""
        check_shape(data, self.model, where)
        return image_metrics(self.model, self.preprocess(data.images),
                             label_ids(data, self.labels, where), prefix="")

    def load_splits(self, recipe: VisionRecipe) -> dict[str, ImageSet | None]:
        return load_image_splits(recipe)

    def split_fingerprint(self, splits: dict[str, ImageSet | None]) -> str:
        return _fingerprint(splits)
