"""Captioned images: the built-in ``shapes`` scenes, and the user's own image/caption files.

``shapes`` is generated, never downloaded: small RGB images (default 32x32) of one or two
shapes (circle, square, triangle, diamond) in six colours and two sizes on a dark, slightly
noisy background, each with a caption that names them and, for two, their relation::

    a large blue square
    a small red circle left of a large blue square

Every scene is a pure function of ``(seed, split, index)``, so a split is re-made bit for bit
from the recipe (and ``evaluate`` can check it by fingerprint). The caption is canonical, so
the target is learnable and exact match means something: with two shapes the larger one is
named first (equal sizes: the left one, or the upper one when they are stacked), and the
relation is the dominant axis of the centres (shapes are placed so that one axis dominates by
at least 2:1 and they never touch).

Composition: ``held_out_pairs(seed)`` picks one colour per shape (four of the 24 colour-shape
pairs, every word still seen in training). Train and valid scenes never contain a held-out
pair; every test scene contains at least one (e.g. a green circle when green and circles were
only ever seen apart), so test scores measure whether the model composes attributes it learned
separately, while validation (in-distribution) picks the checkpoint.

User data (:func:`read_captions`): a TSV of ``image_path<TAB>caption`` lines (paths relative to
the TSV; PNG read by matplotlib, or ``.npy`` arrays; an image on several lines gets several
references), or an ``.npz`` with ``images`` (N, H, W[, C]) or (N, C, H, W) and ``captions``
(N,) strings. Errors name the file and line.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqformer.errors import DataError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "purple": (150, 60, 200), "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# Half-extent of a shape as a fraction of the image side (32 px: 4 and 6 pixels).
SIZES = {"small": 0.125, "large": 0.19}
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND = (25, 25, 30)
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
IMAGE_SUFFIXES = (".png", ".npy")


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its words and its centre (column, row) in pixels."""

    colour: str
    shape: str
    size: str
    cx: int
    cy: int

    def radius(self, image_size: int) -> int:
        return max(2, round(SIZES[self.size] * image_size))

    def words(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass
class CaptionSet:
    """``images`` (N, C, H, W) in raw pixel units; ``references[i]`` the caption(s) of image i;
    ``sources`` where each image came from (for messages and hypothesis files)."""

    images: np.ndarray
    references: list[list[str]]
    sources: list[str]
    pixel_max: float = 255.0
    # For generated scenes: what was drawn (tests and per-attribute scores read it).
    scenes: list[tuple[Shape, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.references)

    def pairs(self) -> list[tuple[int, str]]:
        """(image index, caption) for every reference: what training sees."""
        return [(i, ref) for i, refs in enumerate(self.references) for ref in refs]


def held_out_pairs(seed: int) -> frozenset[tuple[str, str]]:
    """One (colour, shape) pair per shape, with distinct colours: the combinations train and
    valid never show and every test scene contains."""
    colours = random.Random(f"seqformer.shapes.held-out:{seed}").sample(list(COLOURS),
                                                                       len(SHAPES))
    return frozenset(zip(colours, SHAPES))


def shape_mask(shape: Shape, image_size: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels ``shape`` covers."""
    r = shape.radius(image_size)
    y, x = np.mgrid[0:image_size, 0:image_size]
    dx, dy = x - shape.cx, y - shape.cy
    if shape.shape == "circle":
        return dx * dx + dy * dy <= r * r + r // 2
    if shape.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape.shape == "triangle":  # apex up, base at cy + r
        return (dy >= -r) & (dy <= r) & (2 * np.abs(dx) <= dy + r)
    if shape.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    raise ValueError(f"unknown shape {shape.shape!r}")


def render(scene: tuple[Shape, ...], image_size: int, noise: int, rng: np.random.Generator
           ) -> np.ndarray:
    """(3, H, W) uint8 image of ``scene`` with uniform pixel noise of +-``noise``."""
    image = np.empty((image_size, image_size, 3), dtype=np.int16)
    image[:] = BACKGROUND
    for shape in scene:
        image[shape_mask(shape, image_size)] = COLOURS[shape.colour]
    if noise:
        image += rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def relation(first: Shape, second: Shape) -> str:
    """Where ``first`` is relative to ``second``, along the dominant axis (rows grow down)."""
    dx, dy = second.cx - first.cx, second.cy - first.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def ordered(scene: tuple[Shape, ...]) -> tuple[Shape, ...]:
    """The canonical naming order: larger first; equal sizes: left (or upper) first."""
    if len(scene) < 2:
        return scene
    a, b = scene
    if a.size != b.size:
        return (a, b) if a.size == "large" else (b, a)
    return (a, b) if relation(a, b) in ("left of", "above") else (b, a)


def caption(scene: tuple[Shape, ...]) -> str:
    """``a small red circle`` or ``a large blue square left of a small red circle``."""
    named = ordered(scene)
    if len(named) == 1:
        return named[0].words()
    return f"{named[0].words()} {relation(named[0], named[1])} {named[1].words()}"


def _place(rng: np.random.Generator, sizes: list[str], image_size: int
           ) -> list[tuple[int, int]] | None:
    """Centres for shapes of ``sizes`` inside the image, apart, one axis dominating 2:1."""
    centres = []
    for size in sizes:
        r = max(2, round(SIZES[size] * image_size))
        centres.append((int(rng.integers(r + 1, image_size - r - 1)),
                        int(rng.integers(r + 1, image_size - r - 1)), r))
    if len(centres) == 2:
        (x1, y1, r1), (x2, y2, r2) = centres
        dx, dy = abs(x2 - x1), abs(y2 - y1)
        major, minor = max(dx, dy), min(dx, dy)
        if major < 2 * minor or major < r1 + r2 + 2:
            return None
    return [(x, y) for x, y, _ in centres]


def make_scene(seed: int, split: str, index: int, image_size: int = 32,
               held_out: frozenset[tuple[str, str]] | None = None) -> tuple[Shape, ...]:
    """Scene ``index`` of ``split``: a pure function of its arguments. Train / valid scenes
    avoid ``held_out`` pairs; test scenes contain at least one."""
    held_out = held_out_pairs(seed) if held_out is None else held_out
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    allowed = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held_out]
    novel = sorted(held_out)
    count = 1 if rng.random() < 0.25 else 2
    special = int(rng.integers(count)) if split == "test" else -1
    pairs = []
    for k in range(count):
        pool = novel if k == special else (allowed if split != "test" else
                                           [(c, s) for c in COLOURS for s in SHAPES])
        pairs.append(pool[int(rng.integers(len(pool)))])
    sizes = [list(SIZES)[int(rng.integers(len(SIZES)))] for _ in range(count)]
    for _ in range(10000):  # two large shapes fit apart in any image of >= 16 pixels
        if (centres := _place(rng, sizes, image_size)) is not None:
            break
    else:
        raise DataError(f"no room for {' and '.join(sizes)} shapes in {image_size} pixels")
    return tuple(Shape(c, s, size, x, y) for (c, s), size, (x, y) in zip(pairs, sizes, centres))


def make_split(seed: int, split: str, count: int, image_size: int = 32, noise: int = 8
               ) -> CaptionSet:
    """``count`` scenes of ``split``, rendered, with their canonical captions."""
    if image_size < 16:
        raise DataError(f"data.image_size={image_size}: shapes scenes need at least 16 pixels")
    held_out = held_out_pairs(seed)
    scenes, images = [], np.empty((count, 3, image_size, image_size), dtype=np.uint8)
    for i in range(count):
        scene = make_scene(seed, split, i, image_size, held_out)
        # The noise is drawn from its own stream so the scene does not depend on it.
        rng = np.random.default_rng([seed, SPLIT_CODES[split], i, 1])
        images[i] = render(scene, image_size, noise, rng)
        scenes.append(scene)
    return CaptionSet(images, [[caption(s)] for s in scenes],
                      [f"shapes/{split}/{i}" for i in range(count)], 255.0, scenes)


def load_shapes(seed: int, sizes: dict[str, int], image_size: int = 32, noise: int = 8
                ) -> dict[str, CaptionSet]:
    """train / valid / test scenes of the given ``sizes`` (counts per split)."""
    return {name: make_split(seed, name, sizes[name], image_size, noise)
            for name in ("train", "valid", "test")}


def fingerprint(splits: dict[str, CaptionSet | None]) -> str:
    """sha256 of every split's images and captions: equal fingerprints, same examples."""
    h = hashlib.sha256()
    for name, data in sorted(splits.items()):
        if data is None:
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(data.images).tobytes())
        h.update("\n".join("\t".join(refs) for refs in data.references).encode())
    return h.hexdigest()[:16]


# -- user files -----------------------------------------------------------------------------------

def to_chw(image: np.ndarray, where: str) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3 (4: alpha dropped) -> (C, H, W)."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3:
        if image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3):
            return np.moveaxis(image[..., :3] if image.shape[-1] == 4 else image, -1, 0)
        if image.shape[0] in (1, 3):
            return image
    raise DataError(f"{where}: image of shape {image.shape}; expected (H, W), (H, W, C) or "
                    "(C, H, W) with 1 or 3 channels")


def read_image(path: str | Path, where: str) -> np.ndarray:
    """One image as (C, H, W) in 0-255 units (PNG, via matplotlib) or as stored (``.npy``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{where}: {path}: no such image file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: {path}: unsupported image type {suffix or '(none)'}; "
                        f"use {' or '.join(IMAGE_SUFFIXES)}")
    try:
        if suffix == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            import matplotlib.image

            image = matplotlib.image.imread(str(path))
            if image.dtype != np.uint8:  # PNG as floats in [0, 1]
                image = np.round(image * 255.0)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: {path}: unreadable image ({exc})") from None
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{where}: {path}: image of dtype {image.dtype}; store numbers")
    return to_chw(image, f"{where}: {path}").astype(np.float32)


def stack_images(images: list[np.ndarray], names: list[str]) -> np.ndarray:
    """(N, C, H, W) of equally shaped images; a DataError names the first that differs."""
    for image, name in zip(images, names):
        if image.shape != images[0].shape:
            raise DataError(f"{name}: image of shape {image.shape}, but {names[0]} is "
                            f"{images[0].shape}; give images of one size")
    return np.stack(images)


def read_tsv(path: Path, where: str) -> CaptionSet:
    order: list[str] = []
    refs: dict[str, list[str]] = {}
    located: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(f"{path}:{number}: expected 'image_path<TAB>caption', got "
                            f"{line[:60]!r}")
        image, text = parts[0].strip(), " ".join(parts[1].split())
        if image not in refs:
            order.append(image)
            refs[image] = []
            located[image] = f"{path}:{number}"
        refs[image].append(text)
    if not order:
        raise DataError(f"{where}: {path}: no captions; give 'image_path<TAB>caption' lines")
    images = []
    for name in order:
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        images.append(read_image(file, located[name]))
    stacked = stack_images(images, [located[n] for n in order])
    pixel_max = 255.0 if float(stacked.max(initial=0.0)) > 1.0 else 1.0
    return CaptionSet(stacked, [refs[n] for n in order], order, pixel_max)


def read_npz(path: Path, where: str) -> CaptionSet:
    from seqformer.data.images import as_nchw

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: {path}: not a readable .npz file ({exc}); write it with "
                        "numpy.savez(path, images=..., captions=...)") from None
    for key in ("images", "captions"):
        if key not in arrays:
            raise DataError(f"{where}: {path}: no array named '{key}' (found: "
                            f"{', '.join(sorted(arrays)) or 'none'})")
    raw, captions = arrays["images"], arrays["captions"]
    if raw.ndim == 4 and raw.shape[-1] in (1, 3) and raw.shape[1] not in (1, 3):
        raw = np.moveaxis(raw, -1, 1)
    images = as_nchw(raw, f"{where}: {path}")
    if captions.ndim != 1 or len(captions) != len(images):
        raise DataError(f"{where}: {path}: captions have shape {captions.shape} for "
                        f"{len(images)} images; give one caption string per image")
    texts = [" ".join(str(c).split()) for c in captions]
    for i, text in enumerate(texts):
        if not text:
            raise DataError(f"{where}: {path}: caption {i} is empty")
    pixel_max = 255.0 if raw.dtype == np.uint8 or float(images.max(initial=0.0)) > 1.0 else 1.0
    return CaptionSet(images, [[t] for t in texts], [f"{path}[{i}]" for i in range(len(texts))],
                      pixel_max)


def read_captions(path: str | Path, where: str = "--data") -> CaptionSet:
    """A TSV (``image_path<TAB>caption``) or ``.npz`` (``images``, ``captions``) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{where}: {path}: no such file; give a TSV of "
                        "'image_path<TAB>caption' lines or an .npz with images and captions")
    if path.suffix.lower() == ".npz":
        return read_npz(path, where)
    return read_tsv(path, where)


def fit_image(image: np.ndarray, channels: int, size: int) -> np.ndarray:
    """(C, H, W) -> (channels, size, size) in the same pixel units: a grey image repeated to 3
    channels or a colour one averaged to 1, then, if the size differs, a bilinear antialiased
    resize (what ``ViTImageProcessor``'s PIL resize does), so a captioner imported from
    transformers takes photos of any size."""
    import torch
    import torch.nn.functional as F

    if image.shape[0] != channels:
        image = (np.repeat(image, channels, axis=0) if image.shape[0] == 1
                 else image.mean(axis=0, keepdims=True))
    if image.shape[1:] != (size, size):
        pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
        image = pixels[0].numpy()
    return image.astype(np.float32)


def read_images(paths: list[str | Path], fit: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Images to caption: PNG / ``.npy`` files, or ``.npz`` files with an ``images`` array,
    as one (N, C, H, W) array, and a name for each image (``file.npz[i]`` inside an .npz).
    ``fit`` = (channels, size) passes each image through :func:`fit_image` first, so images
    of different sizes can be given together."""
    images, names = [], []
    for item in paths:
        path = Path(item)
        if path.suffix.lower() == ".npz":
            data = read_npz_images(path)
            images.extend(data)
            names.extend(f"{path}[{i}]" for i in range(len(data)))
        else:
            images.append(read_image(path, "image"))
            names.append(str(path))
    if not images:
        raise DataError("no images given")
    if fit is not None:
        images = [fit_image(image, *fit) for image in images]
    return stack_images(images, names), names


def read_npz_images(path: Path) -> list[np.ndarray]:
    from seqformer.data.images import as_nchw

    if not path.is_file():
        raise DataError(f"image: {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files:
                raise DataError(f"{path}: no array named 'images'")
            raw = data["images"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if raw.ndim == 4 and raw.shape[-1] in (1, 3) and raw.shape[1] not in (1, 3):
        raw = np.moveaxis(raw, -1, 1)
    return list(as_nchw(raw, str(path)))


# -- per-attribute scoring ------------------------------------------------------------------------

def parse_caption(text: str) -> tuple[list[tuple[str, str, str]], str | None] | None:
    """(objects as (size, colour, shape), relation or None) of a caption in the shapes
    grammar; None when it is not one (so scores can say how many hypotheses were malformed)."""
    words = text.split()
    objects, rel = [], None
    i = 0
    while i < len(words):
        chunk = words[i:i + 4]
        if (len(chunk) < 4 or chunk[0] != "a" or chunk[1] not in SIZES or chunk[2] not in COLOURS
                or chunk[3] not in SHAPES):
            return None
        objects.append((chunk[1], chunk[2], chunk[3]))
        i += 4
        if i == len(words):
            break
        if len(objects) == 2:
            return None
        for candidate in RELATIONS:
            n = len(candidate.split())
            if " ".join(words[i:i + n]) == candidate:
                rel, i = candidate, i + n
                break
        else:
            return None
    if not objects or (len(objects) == 2) != (rel is not None):
        return None
    return objects, rel


def attribute_scores(hypotheses: list[str], references: list[str],
                     novel: frozenset[tuple[str, str]] | None = None
                     ) -> dict[str, float] | None:
    """Percent of reference objects whose size / colour / shape (and colour + shape together:
    ``pair``, the compositional part) the hypothesis names in the same slot, percent of
    two-shape references whose relation it names (``relation``), percent of hypotheses in the
    grammar (``wellformed``). With ``novel`` (the held-out pairs), ``pair`` is also split into
    ``novel_pair`` and ``seen_pair`` by the reference object's pair. None unless every
    reference is a shapes caption."""
    parsed_refs = [parse_caption(r) for r in references]
    if not references or any(p is None for p in parsed_refs):
        return None
    right = {"size": 0, "colour": 0, "shape": 0, "pair": 0}
    split = {True: [0, 0], False: [0, 0]}  # novel? -> [right, objects]
    objects = relations = relation_right = wellformed = 0
    for hyp, ref in zip(hypotheses, parsed_refs):
        assert ref is not None
        got = parse_caption(hyp)
        wellformed += got is not None
        hyp_objects, hyp_rel = got if got is not None else ([], None)
        for k, (size, colour, shape) in enumerate(ref[0]):
            objects += 1
            tally = split[novel is not None and (colour, shape) in novel]
            tally[1] += 1
            if k < len(hyp_objects):
                h = hyp_objects[k]
                right["size"] += h[0] == size
                right["colour"] += h[1] == colour
                right["shape"] += h[2] == shape
                right["pair"] += h[1] == colour and h[2] == shape
                tally[0] += h[1] == colour and h[2] == shape
        if ref[1] is not None:
            relations += 1
            relation_right += hyp_rel == ref[1]
    out = {f"{k}_acc": 100.0 * v / objects for k, v in right.items()}
    if novel is not None:
        for is_novel, (hits, count) in split.items():
            if count:
                out[f"{'novel' if is_novel else 'seen'}_pair_acc"] = 100.0 * hits / count
    if relations:
        out["relation_acc"] = 100.0 * relation_right / relations
    out["wellformed"] = 100.0 * wellformed / len(hypotheses)
    return out
