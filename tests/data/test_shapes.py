"""The shapes captioning corpus: determinism, held-out colour-shape pairs, captions that say
what the pixels show, per-attribute scoring, and the user-file readers' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqformer.data import shapes
from seqformer.errors import DataError


def test_scenes_are_a_pure_function_of_seed_split_and_index() -> None:
    a = shapes.make_split(3, "train", 40)
    b = shapes.make_split(3, "train", 40)
    assert np.array_equal(a.images, b.images) and a.references == b.references
    # Scene i does not depend on how many were made before it.
    assert shapes.make_scene(3, "train", 17) == a.scenes[17]
    other = shapes.make_split(4, "train", 40)
    assert not np.array_equal(a.images, other.images)
    assert shapes.fingerprint({"train": a}) == shapes.fingerprint({"train": b})
    assert shapes.fingerprint({"train": a}) != shapes.fingerprint({"train": other})


def test_held_out_pairs_only_in_test_and_every_word_still_trained() -> None:
    seed = 5
    held = shapes.held_out_pairs(seed)
    assert len(held) == len(shapes.SHAPES)
    assert {s for _, s in held} == set(shapes.SHAPES)  # one colour per shape
    assert len({c for c, _ in held}) == len(held)  # distinct colours
    splits = shapes.load_shapes(seed, {"train": 300, "valid": 60, "test": 60})
    for name in ("train", "valid"):
        seen = {(o.colour, o.shape) for scene in splits[name].scenes for o in scene}
        assert not seen & held, name
    assert all(any((o.colour, o.shape) in held for o in scene)
               for scene in splits["test"].scenes)
    train_words = {w for refs in splits["train"].references for w in refs[0].split()}
    test_words = {w for refs in splits["test"].references for w in refs[0].split()}
    assert test_words <= train_words


def _pixels_of(image: np.ndarray, colour: str, tolerance: int = 12) -> np.ndarray:
    rgb = np.array(shapes.COLOURS[colour]).reshape(3, 1, 1)
    return np.all(np.abs(image.astype(int) - rgb) <= tolerance, axis=0)


def test_captions_say_what_the_pixels_show() -> None:
    data = shapes.make_split(0, "valid", 150)
    checked = 0
    for image, refs in zip(data.images, data.references):
        parsed = shapes.parse_caption(refs[0])
        assert parsed is not None, refs[0]
        objects, relation = parsed
        colours = [c for _, c, _ in objects]
        if len(set(colours)) != len(colours):
            continue  # two shapes of one colour: their pixels cannot be told apart by colour
        boxes = []
        for size, colour, _ in objects:
            mask = _pixels_of(image, colour)
            radius = round(shapes.SIZES[size] * 32)
            # The named colour covers a shape-sized blob and nothing else of that colour.
            assert 0.4 * (radius + 1) ** 2 <= mask.sum() <= 4.5 * (radius + 1) ** 2, refs[0]
            rows, cols = np.nonzero(mask)
            boxes.append((cols.mean(), rows.mean(), rows.max() - rows.min()))
        if relation is not None:
            (x1, y1, h1), (x2, y2, h2) = boxes
            expected = {"left of": x1 < x2, "right of": x1 > x2, "above": y1 < y2,
                        "below": y1 > y2}[relation]
            assert expected, refs[0]
            sizes = [s for s, _, _ in objects]
            if sizes[0] != sizes[1]:  # the larger is named first, and is drawn taller
                assert sizes[0] == "large" and h1 > h2, refs[0]
        checked += 1
    assert checked > 100


def test_attribute_scores_and_parse() -> None:
    refs = ["a small red circle left of a large blue square", "a large white diamond"]
    assert shapes.parse_caption("a small red circle left of") is None
    assert shapes.parse_caption("a small red circle above a small red circle") == (
        [("small", "red", "circle")] * 2, "above")
    perfect = shapes.attribute_scores(refs, refs)
    assert perfect is not None and all(v == 100.0 for v in perfect.values())
    half = shapes.attribute_scores(["a small red square right of a large blue square",
                                    "nonsense"], refs)
    assert half is not None
    assert half["colour_acc"] == pytest.approx(200 / 3) and half["shape_acc"] == pytest.approx(
        100 / 3) and half["relation_acc"] == 0.0 and half["wellformed"] == 50.0
    assert shapes.attribute_scores(["x"], ["a photo of a dog"]) is None
    # Split by held-out pairs: the red circle (named right) is novel; the blue square and the
    # white diamond (both named wrong) were seen.
    split = shapes.attribute_scores(["a small red circle left of a large blue circle",
                                     "a large white square"], refs,
                                    frozenset({("red", "circle")}))
    assert split is not None
    assert split["novel_pair_acc"] == 100.0 and split["seen_pair_acc"] == 0.0


def test_tsv_and_npz_readers(tmp_path: Path) -> None:
    import matplotlib.image

    image = shapes.make_split(0, "train", 1).images[0]
    matplotlib.image.imsave(tmp_path / "a.png", image.transpose(1, 2, 0))
    np.save(tmp_path / "b.npy", image)
    tsv = tmp_path / "data.tsv"
    tsv.write_text("a.png\tA red  circle\nb.npy\tone\na.png\ta second reference\n",
                   encoding="utf-8")
    data = shapes.read_captions(tsv)
    assert data.references == [["A red circle", "a second reference"], ["one"]]
    assert data.images.shape == (2, 3, 32, 32) and data.pixel_max == 255.0
    assert np.array_equal(data.images[0], data.images[1])  # PNG round trip is exact

    np.savez(tmp_path / "d.npz", images=np.stack([image.transpose(1, 2, 0)] * 2),
             captions=np.array(["x y", "z"]))
    npz = shapes.read_captions(tmp_path / "d.npz")
    assert npz.images.shape == (2, 3, 32, 32) and npz.references == [["x y"], ["z"]]

    bad = tmp_path / "bad.tsv"
    bad.write_text("a.png\tfine\njust one column\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 'image_path<TAB>caption'"):
        shapes.read_captions(bad)
    missing = tmp_path / "missing.tsv"
    missing.write_text("a.png\tfine\nnope.png\tgone\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing\.tsv:2: .*nope\.png: no such image file"):
        shapes.read_captions(missing)
    np.savez(tmp_path / "e.npz", images=np.zeros((2, 8, 8)), captions=np.array(["a"]))
    with pytest.raises(DataError, match="one caption string per image"):
        shapes.read_captions(tmp_path / "e.npz")


def test_fit_image_resizes_like_pil_and_converts_channels() -> None:
    """Photos of any size reach a captioner as ViTImageProcessor would give them: PIL's
    bilinear resize (antialiased when shrinking) is the reference."""
    from PIL import Image

    from seqformer.data.shapes import fit_image

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
    for size in (24, 80):  # shrinking and enlarging
        ours = fit_image(photo.transpose(2, 0, 1).astype(np.float32), 3, size)
        pil = np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR),
                         dtype=np.float32).transpose(2, 0, 1)
        assert ours.shape == (3, size, size)
        assert np.abs(ours - pil).max() <= 1.0  # PIL rounds to whole 8-bit levels
    grey = rng.random((1, 8, 8)).astype(np.float32)
    colour = fit_image(grey, 3, 8)
    assert colour.shape == (3, 8, 8) and all(np.array_equal(c, grey[0]) for c in colour)
    assert np.allclose(fit_image(colour, 1, 8), grey)
