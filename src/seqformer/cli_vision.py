"""Bodies of the Vision Transformer commands; ``cli.py`` only dispatches to them.

``train`` with ``task: image-classify`` and ``evaluate`` of a ``family: vit`` run. Errors a
user can cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_vision(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Train a ViT; print the test accuracy and macro-F1 of the best checkpoint."""
    from seqformer.tasks.vision import describe, train_image_classifier

    summary, test = train_image_classifier(recipe, out, resume=args.resume)
    if summary.get("interrupted"):
        print(f"interrupted at step {summary.get('step')}; resume with: seqformer train "
              f"{args.recipe} --out {out} --resume", file=sys.stderr)
        return 130
    if test:
        print("test: " + describe({k[5:]: v for k, v in test.items()}))
    print(f"model saved in {out}")
    return 0


def evaluate_vision(args: argparse.Namespace) -> int:
    """Score a ViT run on an .npz file (``--data``) or on its recipe's test split."""
    from seqformer.data.images import read_npz
    from seqformer.tasks.vision import ImageClassifier, describe

    device = getattr(args, "device", "cpu") or "cpu"
    classifier = ImageClassifier.load(args.model[0], "cpu" if device == "auto" else device)
    if args.data:
        if len(args.data) != 1:
            raise UserError("evaluate: give one --data .npz file for a ViT model")
        data, where = read_npz(args.data[0], "--data"), args.data[0]
    else:
        data = classifier.test_split()
        if data is None:
            raise UserError(f"evaluate: {args.model[0]} has no recipe test split; give --data "
                            "FILE.npz (arrays images and labels)")
        where = "the recipe's test split"
    metrics = classifier.evaluate(data, where)
    print(f"{where} ({len(data)} images): {describe(metrics)}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
