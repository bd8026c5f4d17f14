"""Bodies of the Vision Transformer commands; ``cli.py`` only dispatches to them.

``train`` with ``task: image-classify`` and ``evaluate`` of a ``family: vit`` run. Errors a
user can cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def train_vision(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Train a ViT; print the test accuracy and macro-F1 of the best checkpoint."""
    from seqformer.cli import classifier_trained
    from seqformer.tasks.vision import train_image_classifier

    return classifier_trained(args, out, *train_image_classifier(recipe, out,
                                                                 resume=args.resume))


def evaluate_vision(args: argparse.Namespace) -> int:
    """Score a ViT run on an .npz file (``--data``) or on its recipe's test split."""
    from seqformer.cli import data_or_test_split
    from seqformer.data.images import read_npz
    from seqformer.tasks.classify import describe
    from seqformer.tasks.vision import ImageClassifier

    device = getattr(args, "device", "cpu") or "cpu"
    classifier = ImageClassifier.load(args.model[0], "cpu" if device == "auto" else device)
    data, where = data_or_test_split(args, classifier, read_npz,
                                     "one --data .npz file for a ViT model",
                                     "FILE.npz (arrays images and labels)")
    metrics = classifier.evaluate(data, where)
    print(f"{where} ({len(data)} images): {describe(metrics)}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
