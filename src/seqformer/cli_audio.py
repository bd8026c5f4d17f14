"""Bodies of the Audio Spectrogram Transformer commands; ``cli.py`` only dispatches to them.

``train`` with ``task: audio-classify`` and ``evaluate`` of a ``family: ast`` run (imported
ones included). Errors a user can cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_audio(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Train an AST; print the test accuracy and macro-F1 of the best checkpoint."""
    from seqformer.tasks.audio import describe, train_audio_classifier

    summary, test = train_audio_classifier(recipe, out, resume=args.resume)
    if summary.get("interrupted"):
        print(f"interrupted at step {summary.get('step')}; resume with: seqformer train "
              f"{args.recipe} --out {out} --resume", file=sys.stderr)
        return 130
    if test:
        print("test: " + describe({k[5:]: v for k, v in test.items()}))
    print(f"model saved in {out}")
    return 0


def evaluate_audio(args: argparse.Namespace) -> int:
    """Score an AST run on a clip list (``--data`` TSV of path.wav<TAB>label, or a directory
    of LABEL/*.wav) or on its recipe's test split; print the metrics and the confusions."""
    from seqformer.data.speech import read_clip_list
    from seqformer.tasks.audio import AudioClassifier, confusion_summary, describe

    device = getattr(args, "device", "cpu") or "cpu"
    classifier = AudioClassifier.load(args.model[0], "cpu" if device == "auto" else device)
    if args.data:
        if len(args.data) != 1:
            raise UserError("evaluate: give one --data TSV (path.wav<TAB>label) or directory "
                            "for an AST model")
        data, where = read_clip_list(args.data[0], "--data"), args.data[0]
    else:
        data = classifier.test_split()
        if data is None:
            raise UserError(f"evaluate: {args.model[0]} has no recipe test split; give --data "
                            "FILE.tsv (path.wav<TAB>label lines)")
        where = "the recipe's test split"
    metrics, predicted = classifier.evaluate(data, where)
    print(f"{where} ({len(data)} clips): {describe(metrics)}")
    for line in confusion_summary(data.labels, predicted):
        print(f"  {line}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
