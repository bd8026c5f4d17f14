"""Image captioning with the ViT + Transformer-decoder captioner (``task: image-caption``).

The task owns what the trainer must not know: making or reading the captioned images
(``data/shapes.py``), the pixel preprocessing (fitted on the training split and saved in
``config.json`` as ``preprocess``, ViT's block), the caption tokenizer (trained on the training
captions), validation (loss, and BLEU / exact match of greedy captions) and the run directory
(``config.json`` with ``family: captioner``, ``recipe.yaml`` with the split fingerprint,
``tokenizer/``, ``model.safetensors``). :class:`ImageCaptioner` is the inference side:
``ImageCaptioner.load(run).caption(images, beam=3)``.

Metrics: corpus BLEU (sacrebleu, ``metrics/bleu.py``; every reference of an image counts),
``exact`` = percent of captions equal to one of the image's references, ``n``; on shapes
captions also per-attribute accuracies (``data/shapes.attribute_scores``: size, colour, shape,
colour + shape together, relation, well-formed captions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqformer.data.images import Preprocess
from seqformer.data.mlm import ExampleStream
from seqformer.data.shapes import (
    CaptionSet,
    attribute_scores,
    fingerprint,
    fit_image,
    held_out_pairs,
    load_shapes,
    read_captions,
    read_images,
)
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.errors import DataError
from seqformer.metrics.bleu import bleu
from seqformer.models.captioner import (
    CaptionBatch,
    Captioner,
    caption_length,
    collate,
)
from seqformer.recipe import DecodeConfig
from seqformer.recipe_caption import CaptionRecipe, caption_recipe_from_dict
from seqformer.tasks.rundir import (
    check_same_split,
    check_vocabulary,
    log,
    recipe_if_saved,
    write_run_metadata,
)
from seqformer.training.trainer import Trainer

DECODE_BATCH = 128

Example = tuple[torch.Tensor, list[int]]


def load_caption_splits(recipe: CaptionRecipe) -> tuple[dict[str, CaptionSet | None], str]:
    """train / valid / test of the recipe (test may be None for files) and the split's
    fingerprint (images and captions of every split)."""
    d = recipe.data
    splits: dict[str, CaptionSet | None]
    if d.corpus == "shapes":
        splits = dict(load_shapes(d.split_seed, {"train": d.train_size, "valid": d.valid_size,
                                                 "test": d.test_size}, d.image_size, d.noise))
    else:
        assert d.train is not None
        train = read_captions(d.train, "data.train")
        if d.valid:
            valid = read_captions(d.valid, "data.valid")
        else:  # the last images of train: the file's order is the user's, so deterministic
            cut = max(1, int(round(len(train) * (1 - d.valid_fraction))))
            if cut >= len(train):
                raise DataError(f"data.train: {len(train)} image(s) leave none for "
                                "validation; give data.valid or more images")
            valid = CaptionSet(train.images[cut:], train.references[cut:], train.sources[cut:],
                               train.pixel_max)
            train = CaptionSet(train.images[:cut], train.references[:cut], train.sources[:cut],
                               train.pixel_max)
        test = read_captions(d.test, "data.test") if d.test else None
        splits = {"train": train, "valid": valid, "test": test}
    return splits, fingerprint(splits)


def check_images(data: CaptionSet | np.ndarray, model: Captioner, where: str) -> None:
    c = model.config
    images = data.images if isinstance(data, CaptionSet) else data
    want = (c.channels, c.image_size, c.image_size)
    if tuple(images.shape[1:]) != want:
        raise DataError(f"{where}: images are (C, H, W) = {tuple(images.shape[1:])} but the "
                        f"model takes {want}; resize the images (or, for training, set "
                        "model.image_size to match)")


def encode_captions(data: CaptionSet, tokenizer: Tokenizer, max_tokens: int, where: str
                    ) -> list[tuple[int, list[int]]]:
    """(image index, caption ids) of every reference; a DataError for a caption too long."""
    out = []
    for i, text in data.pairs():
        ids = tokenizer.encode(text)
        if len(ids) > max_tokens:
            raise DataError(f"{where}: {data.sources[i]}: caption of {len(ids)} tokens exceeds "
                            f"{max_tokens} (model.max_target_positions - 2)")
        out.append((i, ids))
    return out


class CaptionStream(ExampleStream):
    """Training batches: a seeded shuffle per epoch of (pixels, caption ids) examples."""

    def make_batch(self, examples: list[Example], position: int) -> CaptionBatch:
        return collate(torch.stack([p for p, _ in examples]), [y for _, y in examples])


def scores(hypotheses: list[str], references: list[list[str]],
           novel: frozenset[tuple[str, str]] | None = None) -> dict[str, float]:
    """BLEU, exact match (percent), ``n``, and on shapes captions the per-attribute scores
    (with ``novel``, the held-out colour-shape pairs, colour + shape split by them)."""
    exact = sum(h in refs for h, refs in zip(hypotheses, references))
    out = {"bleu": bleu(hypotheses, references),
           "exact": 100.0 * exact / max(len(hypotheses), 1)}
    attributes = attribute_scores(hypotheses, [refs[0] for refs in references], novel)
    if attributes:
        out.update(attributes)
    out["n"] = float(len(hypotheses))
    return out


@torch.no_grad()
def decode_pixels(model: Captioner, pixels: torch.Tensor, beam: int = 1, alpha: float = 0.0,
                  penalty: str = "gnmt", max_length: int | None = None,
                  batch_size: int = DECODE_BATCH) -> list[list[int]]:
    """Caption ids (without bos / eos) of normalised images, ``batch_size`` at a time.
    ``max_length`` goes to search.py explicitly (its default counts non-zero source ids)."""
    device = next(model.parameters()).device
    limit = caption_length(model, max_length)
    out: list[list[int]] = []
    for i in range(0, len(pixels), batch_size):
        chunk = pixels[i:i + batch_size].to(device)
        if beam <= 1:
            out.extend(h.tokens for h in greedy_search(model, chunk, limit))
        else:
            out.extend(b[0].tokens for b in beam_search(model, chunk, beam, limit, alpha,
                                                        penalty))
    return out


def validation(model: Captioner, valid: list[Example], decode: tuple[torch.Tensor,
               list[list[str]]], tokenizer: Tokenizer) -> dict[str, float]:
    """Mean loss / NLL per caption token over ``valid``; BLEU and exact match of greedy
    captions of the ``decode`` images against their references."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss = nll = tokens = 0.0
    with torch.no_grad():
        for i in range(0, len(valid), DECODE_BATCH):
            chunk = valid[i:i + DECODE_BATCH]
            batch = collate(torch.stack([p for p, _ in chunk]), [y for _, y in chunk])
            out = model(batch.to(device))
            loss += float(out.loss) * out.n_tokens
            nll += float(out.nll) * out.n_tokens
            tokens += out.n_tokens
    metrics = {"valid_loss": loss / max(tokens, 1), "valid_nll": nll / max(tokens, 1)}
    pixels, refs = decode
    if len(refs):
        hyps = [tokenizer.decode(x) for x in decode_pixels(model, pixels)]
        found = scores(hyps, refs)
        metrics.update({"bleu": found["bleu"], "exact": found["exact"]})
    model.train(was_training)
    return metrics


def train_caption(recipe: CaptionRecipe, out_dir: str | Path, resume: bool = False
                  ) -> tuple[dict, dict[str, dict[str, float]], list[tuple[str, str, str]]]:
    """Train into ``out_dir``; returns the trainer summary, the test metrics of the best
    checkpoint for greedy and for ``decode.beam`` (empty without a test split), also written
    to ``test_metrics.json``, with the best checkpoint's greedy scores on the validation split
    under ``valid`` (also ``valid_metrics.json``), and a few (source, caption, reference) test
    examples."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    splits, split_fp = load_caption_splits(recipe)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert train is not None and valid is not None
    d = recipe.data
    texts = [text for _, text in train.pairs()]
    tokenizer = (load_tokenizer(out / "tokenizer") if resume
                 else train_tokenizer(d.tokenizer, texts, d.vocab_size))
    _, channels, height, width = train.images.shape
    if height != width:
        raise DataError(f"data.train: images are {height}x{width}; the captioner takes square "
                        "images, pad or crop them")
    torch.manual_seed(recipe.train.seed)
    model = Captioner(recipe.model_config(tokenizer.vocab_size, height, channels))
    preprocess = Preprocess.fit(train.images, d.pixel_max or train.pixel_max)
    max_tokens = model.config.max_target_positions - 2
    pixels: dict[str, torch.Tensor] = {}
    examples: dict[str, list[Example]] = {}
    for name, data in splits.items():
        if data is None:
            continue
        check_images(data, model, f"data.{name}")
        pixels[name] = preprocess(data.images)
        examples[name] = [(pixels[name][i], ids) for i, ids in
                          encode_captions(data, tokenizer, max_tokens, f"data.{name}")]
    stream = CaptionStream(examples["train"], d.batch_size, recipe.train.seed)
    c = model.config
    log(f"data: {len(train)} train / {len(valid)} valid / "
        f"{len(test) if test is not None else 0} test images (split {split_fp}); "
        f"{len(texts)} training captions, vocabulary {tokenizer.vocab_size}")
    log(f"model: captioner {model.num_parameters() / 1e6:.2f}M parameters, {c.num_patches} "
        f"patches of {c.patch_size}x{c.patch_size}, {c.encoder_layers}+{c.decoder_layers} "
        f"layers, d_model {c.d_model}; {stream.per_epoch} batches an epoch, "
        f"{recipe.train.max_steps} steps")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json(preprocess.to_dict()))

    if not resume:
        tokenizer.save(out / "tokenizer")
    save_run(out)
    n = min(d.valid_decode, len(valid))
    to_decode = (pixels["valid"][:n], valid.references[:n])
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: validation(m, examples["valid"], to_decode, tokenizer),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, dict[str, float]] = {}
    shown: list[tuple[str, str, str]] = []
    if test is not None and not summary.get("interrupted"):
        best = ImageCaptioner.load(out, str(trainer.device))
        # In-distribution next to the test split's (held-out pairs for shapes): the gap is
        # what composition costs. Written apart, so test_metrics.json holds test scores only.
        valid_scores = best.evaluate(valid, beam=1)
        (out / "valid_metrics.json").write_text(json.dumps({"greedy": valid_scores}, indent=2)
                                                + "\n", encoding="utf-8")
        results = score_test(best, test, recipe.decode.beam, out)
        shown = [(s, h, refs[0]) for s, h, refs in
                 zip(test.sources, best.last_hypotheses, test.references)][:5]
        results = {**results, "valid": valid_scores}
    return summary, results, shown


def score_test(best: ImageCaptioner, test: CaptionSet, beam: int, out: Path
               ) -> dict[str, dict[str, float]]:
    """Test metrics of a run's best checkpoint, greedy and (``beam`` > 1) with the beam,
    written to ``out/test_metrics.json``; the beam's (or greedy's) captions to
    ``out/test.hyp.tsv``."""
    results = {"greedy": best.evaluate(test, beam=1)}
    if beam > 1:
        results[f"beam{beam}"] = best.evaluate(test, beam=beam)
    (out / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n",
                                           encoding="utf-8")
    write_hypotheses(out / "test.hyp.tsv", test, best.last_hypotheses)
    return results


def write_hypotheses(path: Path, data: CaptionSet, hypotheses: list[str]) -> None:
    lines = [f"{s}\t{h}\t{refs[0]}" for s, h, refs in
             zip(data.sources, hypotheses, data.references)]
    path.write_text("source\tcaption\treference\n" + "\n".join(lines) + "\n", encoding="utf-8")


class ImageCaptioner:
    """A trained (or imported) captioner with its tokenizer, pixel preprocessing and decoding
    defaults: ``caption`` raw images or image files, ``evaluate`` captioned images."""

    def __init__(self, model: Captioner, tokenizer: Tokenizer, preprocess: Preprocess,
                 recipe: CaptionRecipe | None = None) -> None:
        self.model, self.tokenizer, self.preprocess = model.eval(), tokenizer, preprocess
        self.recipe = recipe
        self.decode = recipe.decode if recipe is not None else DecodeConfig()
        self.run_dir: Path | None = None
        self.last_hypotheses: list[str] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> ImageCaptioner:
        run_dir = Path(run_dir)
        data = Captioner.read_config(run_dir)
        model = Captioner.load(run_dir, device)
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        channels = model.config.channels
        pre = data.get("preprocess") or {"pixel_max": 1.0, "mean": [0.0] * channels,
                                         "std": [1.0] * channels}
        captioner = cls(model, tokenizer, Preprocess(float(pre["pixel_max"]),
                                                     list(pre["mean"]), list(pre["std"])),
                        recipe_if_saved(run_dir, caption_recipe_from_dict))
        captioner.run_dir = run_dir
        return captioner

    def _texts(self, images: np.ndarray, beam: int | None, alpha: float | None,
               max_length: int | None, where: str) -> list[str]:
        check_images(images, self.model, where)
        d = self.decode
        ids = decode_pixels(self.model, self.preprocess(images), beam or d.beam,
                            d.alpha if alpha is None else alpha, d.penalty,
                            max_length or d.max_length)
        return [self.tokenizer.decode(x) for x in ids]

    def read(self, paths: Sequence[str | Path]) -> tuple[np.ndarray, list[str]]:
        """Image files as this model takes them -- any size, grey or colour, resized and
        converted (:func:`~seqformer.data.shapes.fit_image`) -- and a name for each."""
        c = self.model.config
        return read_images(list(paths), fit=(c.channels, c.image_size))

    def caption(self, images: np.ndarray | Sequence[str | Path], beam: int | None = None,
                alpha: float | None = None, max_length: int | None = None) -> list[str]:
        """A caption for each image: raw pixels (N, C, H, W) / (N, H, W) in the units the
        model was trained on (0-255 for 8-bit images), or PNG / .npy / .npz file paths; images
        of another size or channel count are resized and converted first."""
        if isinstance(images, np.ndarray | torch.Tensor):
            array = np.asarray(images, dtype=np.float32)
            array = array[:, None] if array.ndim == 3 else array
            c = self.model.config
            if array.ndim == 4 and array.shape[1:] != (c.channels, c.image_size, c.image_size):
                array = np.stack([fit_image(a, c.channels, c.image_size) for a in array])
        else:
            if not images:
                return []
            array = self.read(images)[0]
        return self._texts(array, beam, alpha, max_length, "images")

    def evaluate(self, data: CaptionSet, beam: int | None = None, alpha: float | None = None,
                 where: str = "--data") -> dict[str, float]:
        """BLEU, exact match, ``n`` (and per-attribute scores on shapes captions) of the
        captions of ``data``'s images against its references."""
        if len(data) == 0:
            raise DataError("nothing to evaluate: no images")
        hyps = self._texts(data.images, beam, alpha, None, where)
        self.last_hypotheses = hyps
        novel = None
        if self.recipe is not None and self.recipe.data.corpus == "shapes":
            novel = held_out_pairs(self.recipe.data.split_seed)
        return scores(hyps, data.references, novel)

    def test_split(self) -> CaptionSet | None:
        """The recipe's test split, re-made; a DataError when the data now gives another split
        than the run was trained on."""
        if self.recipe is None or self.run_dir is None:
            return None
        splits, split_fp = load_caption_splits(self.recipe)
        check_same_split(self.recipe, split_fp, self.run_dir / "recipe.yaml",
                         "give --data FILE.tsv instead")
        return splits["test"]


def describe(metrics: dict[str, Any]) -> str:
    names = {"bleu": "BLEU", "exact": "exact", "size_acc": "size", "colour_acc": "colour",
             "shape_acc": "shape", "pair_acc": "colour+shape",
             "novel_pair_acc": "unseen-pair", "seen_pair_acc": "seen-pair",
             "relation_acc": "relation",
             "wellformed": "well-formed"}
    return "  ".join(f"{names.get(k, k)} {v:.1f}" for k, v in metrics.items() if k != "n")
