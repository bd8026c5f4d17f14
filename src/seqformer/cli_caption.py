"""Command-line bodies of the image-captioning family (``task: image-caption``, family
``captioner``): ``train``, ``evaluate`` and ``caption``.

cli.py dispatches here on the recipe's task and on config.json's family; the subcommand
``caption`` is registered by :func:`add_parsers`. Errors a user can cause are
:class:`~seqformer.errors.UserError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from seqformer.errors import DataError, UserError


def train_caption(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: image-caption``: the best checkpoint's test BLEU /
    exact match (greedy and beam) and a few test captions."""
    from seqformer.cli import _interrupted
    from seqformer.tasks.caption import describe, train_caption

    summary, results, shown = train_caption(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    shapes = recipe.data.corpus == "shapes"
    for name, metrics in results.items():
        if name == "valid":
            seen = ", colour-shape pairs seen in training" if shapes else ""
            print(f"valid ({int(metrics['n'])} images{seen}), greedy: {describe(metrics)}")
            continue
        novel = ", each with a colour-shape pair unseen in training" if shapes else ""
        print(f"test ({int(metrics['n'])} images{novel}), {name}: {describe(metrics)}")
    for source, caption, reference in shown:
        mark = "ok" if caption == reference else f"reference: {reference}"
        print(f"  {source}: {caption}  [{mark}]")
    if results:
        print(f"captions written to {out / 'test.hyp.tsv'}")
    print(f"model saved in {out}")
    return 0


def evaluate_caption(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for a captioner: ``--data`` (a TSV of
    image_path<TAB>caption, or an .npz with images and captions) or the test split."""
    from seqformer.cli import _device, data_or_test_split
    from seqformer.data.shapes import read_captions
    from seqformer.tasks.caption import ImageCaptioner, describe, write_hypotheses

    if len(args.model) != 1:
        raise UserError("evaluate: give one --model for an image captioner")
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    captioner = ImageCaptioner.load(args.model[0], _device(args.device))
    data, where = data_or_test_split(args, captioner, read_captions,
                                     "one --data TSV (image_path<TAB>caption) or .npz",
                                     "FILE.tsv (image_path<TAB>caption lines)")
    metrics = captioner.evaluate(data, beam=args.beam, alpha=args.alpha, where=where)
    beam = args.beam or captioner.decode.beam
    print(f"{where} ({len(data)} images, {'greedy' if beam <= 1 else f'beam {beam}'}): "
          f"{describe(metrics)}")
    out = Path(args.out) if args.out else Path(args.model[0]) / "eval.hyp.tsv"
    write_hypotheses(out, data, captioner.last_hypotheses)
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"captions written to {out}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    """``seqformer caption --model RUN IMAGE ...``: one caption per image (``path<TAB>caption``
    when there are several, or with --show-source)."""
    from seqformer.cli import _device
    from seqformer.tasks.caption import ImageCaptioner

    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max-length must be >= 1, got {args.max_length}")
    for path in args.images:  # before the model: a bad path fails fast
        if not Path(path).is_file():
            raise DataError(f"image: {path}: no such image file")
    captioner = ImageCaptioner.load(args.model, _device(args.device))
    images, names = captioner.read(args.images)  # any size: resized to what the model takes
    texts = captioner.caption(images, beam=args.beam, max_length=args.max_length)
    for name, text in zip(names, texts):
        print(f"{name}\t{text}" if len(texts) > 1 or args.show_source else text)
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``caption``."""
    p = sub.add_parser("caption", help="describe images in words with an image-caption run")
    p.add_argument("images", nargs="+", help="image files (.png, .npy, or .npz with an "
                   "'images' array)")
    p.add_argument("--model", required=True, help="run directory of a 'task: image-caption' "
                   "recipe")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default "
                   "from the recipe)")
    p.add_argument("--max-length", type=int, default=None, help="maximum caption tokens")
    p.add_argument("--show-source", action="store_true", help="print path<TAB>caption even "
                   "for one image")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_caption)
