"""Labelled images for image classification: scikit-learn's handwritten digits, or .npz files.

``digits`` is ``sklearn.datasets.load_digits``: 1,797 real 8x8 grey images of the digits 0-9
(pixel values 0-16), bundled with scikit-learn, so nothing is downloaded. It is split into
train / valid / test, stratified by class, as a pure function of the seed.

An ``.npz`` file holds ``images`` (N, H, W) or (N, C, H, W) and ``labels`` (N,) (integers or
strings). Pixels are scaled to [0, 1] by ``pixel_max`` (16 for digits, 255 for uint8 images, 1
for floats unless given), then normalised by the training split's per-channel mean and
standard deviation; :class:`Preprocess` records both so inference repeats them exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqformer.data.mlm import ExampleStream
from seqformer.errors import DataError
from seqformer.models.vit import ImageBatch

DIGITS_PIXEL_MAX = 16.0


@dataclass
class ImageSet:
    """``images`` (N, C, H, W) in raw pixel units, ``labels`` (N,) raw labels."""

    images: np.ndarray
    labels: np.ndarray
    pixel_max: float = 1.0  # what scales these pixels to [0, 1] unless data.pixel_max says

    def __len__(self) -> int:
        return int(len(self.labels))


def as_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) -> (N, C, H, W) float32; anything else is a DataError."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{where}: images have shape {images.shape}; expected (N, H, W) or "
                        "(N, C, H, W)")
    if not np.issubdtype(images.dtype, np.number):
        raise DataError(f"{where}: images have dtype {images.dtype}; store numbers")
    return images.astype(np.float32)


def load_digits_splits(seed: int, valid_fraction: float, test_fraction: float
                       ) -> dict[str, ImageSet]:
    """scikit-learn's digits, stratified train / valid / test (a function of ``seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = digits.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    train_x, valid_x, train_y, valid_y = train_test_split(
        rest_x, rest_y, test_size=valid_fraction / (1.0 - test_fraction), random_state=seed,
        stratify=rest_y)
    return {"train": ImageSet(train_x, train_y, DIGITS_PIXEL_MAX),
            "valid": ImageSet(valid_x, valid_y, DIGITS_PIXEL_MAX),
            "test": ImageSet(test_x, test_y, DIGITS_PIXEL_MAX)}


def read_npz(path: str | Path, field: str = "data.train") -> ImageSet:
    """``images`` and ``labels`` of an .npz file, with one-line errors naming file and fix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: {path}: no such file; give an .npz file with arrays "
                        "'images' and 'labels'")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); write it with "
                        "numpy.savez(path, images=..., labels=...)") from None
    for key in ("images", "labels"):
        if key not in arrays:
            raise DataError(f"{path}: no array named '{key}' (found: "
                            f"{', '.join(sorted(arrays)) or 'none'}); save it with "
                            "numpy.savez(path, images=..., labels=...)")
    pixel_max = 255.0 if arrays["images"].dtype == np.uint8 else 1.0
    images = as_nchw(arrays["images"], str(path))
    labels = arrays["labels"]
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{path}: labels have shape {labels.shape} for {len(images)} images; "
                        "give one label per image, shape (N,)")
    if len(images) == 0:
        raise DataError(f"{path}: no images; give at least one")
    return ImageSet(images, labels, pixel_max)


def stratified_split(data: ImageSet, fraction: float, seed: int, where: str
                     ) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of ``data`` (stratified when every class has two examples)."""
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(data.labels, return_counts=True)
    stratify = data.labels if counts.min() >= 2 else None
    try:
        a_x, b_x, a_y, b_y = train_test_split(data.images, data.labels, test_size=fraction,
                                              random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"{where}: too few images to hold out {fraction:.0%} ({exc}); give "
                        "data.valid") from None
    return ImageSet(a_x, a_y, data.pixel_max), ImageSet(b_x, b_y, data.pixel_max)


@dataclass(frozen=True)
class Preprocess:
    """Raw pixels -> model input: ``(x / pixel_max - mean[c]) / std[c]``."""

    pixel_max: float
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: np.ndarray, pixel_max: float) -> Preprocess:
        scaled = images / pixel_max
        mean = scaled.mean(axis=(0, 2, 3))
        std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-6)
        return cls(float(pixel_max), [float(x) for x in mean], [float(x) for x in std])

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.dim() == 3:
            x = x[:, None]
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x / self.pixel_max - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (pixels, label index) examples."""

    def make_batch(self, examples: list[Any], position: int) -> ImageBatch:
        pixels = torch.stack([p for p, _ in examples])
        labels = torch.tensor([y for _, y in examples], dtype=torch.long)
        return ImageBatch(pixels, labels)
