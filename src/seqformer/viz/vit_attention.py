"""What a trained Vision Transformer attends to: attention rollout and per-layer [CLS] maps.

Dosovitskiy et al. (2020, fig. 6) show the attention of a trained ViT "emerging" on the object
that decides the class. Two views of it, both read off the model's own forward pass
(:meth:`~seqformer.models.vit.ViT.logits_and_attention`):

* per layer, the row of [CLS] -- the position the classifier reads -- averaged over heads: what
  that one layer gathers from each patch;
* attention rollout (Abnar & Zuidema, 2020): the residual connection carries every token on
  unchanged, so each layer's head-averaged weights get the identity added and their rows
  renormalised, and the layers are multiplied through (``A_L ... A_1``); the [CLS] row of the
  product estimates how much each input patch flows into the classifier across all layers.

Each [CLS]-to-patch row is reshaped to the patch grid (patches are read row-major) and
upsampled bilinearly to the image, then drawn over it (a grey image as contour lines of its
strokes on the map).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seqformer.viz.attention import _pyplot

PANELS_PER_ROW = 7


def head_mean_with_residual(weights: Tensor) -> Tensor:
    """(..., heads, T, T) -> (..., T, T): heads averaged, the identity added for the skip
    connection, rows renormalised (= 0.5 W + 0.5 I when the rows of W sum to 1)."""
    mean = weights.float().mean(dim=-3)
    mixed = mean + torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
    return mixed / mixed.sum(dim=-1, keepdim=True)


def rollout(weights: Sequence[Tensor]) -> Tensor:
    """Attention rollout of layers ``weights`` (layer 0 first, each (..., heads, T, T)):
    ``A_L @ ... @ A_1`` of :func:`head_mean_with_residual`, (..., T, T), rows summing to 1.

    Row i says how much of each input token reaches position i at the top, treating every
    layer as a linear mixing of tokens (it ignores the values and the feed-forward blocks)."""
    if not weights:
        raise ValueError("rollout needs at least one layer of attention weights")
    joint = head_mean_with_residual(weights[0])
    for layer in weights[1:]:
        joint = head_mean_with_residual(layer) @ joint
    return joint


def cls_to_patches(matrix: Tensor) -> Tensor:
    """(..., T, T) with [CLS] at position 0 -> (..., g, g): the [CLS] row over the patches
    (columns 1..), in the patch grid. The [CLS]-to-itself share is left out, so a map need
    not sum to 1."""
    patches = matrix[..., 0, 1:]
    side = math.isqrt(patches.shape[-1])
    if side * side != patches.shape[-1]:
        raise ValueError(f"{patches.shape[-1]} patches do not form a square grid")
    return patches.reshape(*patches.shape[:-1], side, side)


def upsample(grids: Tensor, size: int) -> Tensor:
    """(..., g, g) -> (..., size, size), bilinear: each patch's value spread over its pixels."""
    lead = grids.shape[:-2]
    flat = grids.reshape(-1, 1, *grids.shape[-2:]).float()
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, size, size)


@dataclass
class ViTAttentionMaps:
    """One image, the model's prediction and its attention, ready to draw.

    ``image`` is (C, H, W) in the model's raw pixel units (0..``pixel_max``); ``weights`` are
    the per-layer (heads, T, T) matrices; ``layer_maps`` (layers, H, W) and ``rollout_map``
    (H, W) are the [CLS]-to-patch attentions upsampled over the image."""

    name: str
    image: np.ndarray
    pixel_max: float
    label: str
    probability: float
    weights: list[Tensor]
    layer_maps: Tensor
    rollout_map: Tensor


@torch.inference_mode()
def vit_attention_maps(classifier, image: np.ndarray, name: str = "image") -> ViTAttentionMaps:
    """Classify one raw image (C, H, W) of the model's size with an
    :class:`~seqformer.tasks.vision.ImageClassifier` and collect its attention maps."""
    model = classifier.model
    pixels = classifier.inputs(image[None]).to(classifier.device)
    logits, weights = model.logits_and_attention(pixels)
    probs = logits[0].float().softmax(-1)
    best = int(probs.argmax())
    layers = [w[0].float().cpu() for w in weights]  # (heads, T, T) each
    size = model.config.image_size
    return ViTAttentionMaps(
        name=name, image=np.asarray(image, dtype=np.float32),
        pixel_max=float(classifier.preprocess.pixel_max), label=classifier.labels[best],
        probability=float(probs[best]), weights=layers,
        layer_maps=upsample(cls_to_patches(torch.stack(layers).mean(dim=1)), size),
        rollout_map=upsample(cls_to_patches(rollout(layers)), size))


def _display_image(image: np.ndarray, pixel_max: float) -> tuple[np.ndarray, str | None]:
    """(C, H, W) raw pixels -> what ``imshow`` takes, in [0, 1], and its colour map."""
    scaled = np.clip(image / pixel_max, 0.0, 1.0)
    if scaled.shape[0] == 1:
        return scaled[0], "gray"
    return np.moveaxis(scaled, 0, -1), None


def _panel(ax, picture: tuple[np.ndarray, str | None], overlay: Tensor | None,
           title: str) -> None:
    """The image, or a map over it, scaled to its own maximum (maps differ in scale by layer;
    the pattern, not the level, is what a panel shows). A grey image's strokes are drawn as
    contour lines on the opaque map: blending grey into a colour map makes bright strokes and
    strong attention look alike. A colour image shows through a translucent map instead."""
    pixels, cmap = picture
    if overlay is None or cmap is None:
        ax.imshow(pixels, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    if overlay is not None:
        shown = (overlay / overlay.max().clamp_min(1e-12)).numpy()
        ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=1.0, interpolation="bilinear",
                  alpha=0.6 if cmap is None else 1.0)
        if cmap is not None and pixels.min() < 0.5 < pixels.max():  # else no stroke to draw
            ax.contour(pixels, levels=[0.5], colors="cyan", linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw(maps: ViTAttentionMaps, dpi: int = 100):
    """A matplotlib figure: the image, the rollout over it, then one panel per layer with that
    layer's head-averaged [CLS] attention over it (rows of up to ``PANELS_PER_ROW``)."""
    plt = _pyplot()
    n_layers = len(maps.layer_maps)
    panels = 2 + n_layers
    cols = min(panels, PANELS_PER_ROW)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, dpi=dpi,
                             figsize=(2.2 * cols, 2.4 * rows + 0.4))
    flat = [ax for row in axes for ax in row]
    picture = _display_image(maps.image, maps.pixel_max)
    _panel(flat[0], picture, None, "image")
    _panel(flat[1], picture, maps.rollout_map, "rollout (all layers)")
    for i in range(n_layers):
        _panel(flat[2 + i], picture, maps.layer_maps[i], f"layer {i} [CLS]")
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(f"{maps.name}  ->  {maps.label} (p={maps.probability:.2f}); [CLS] attention, "
                 "mean of heads, each map scaled to its maximum", fontsize=9)
    fig.tight_layout()
    return fig
