"""Bodies of the audio classification commands; ``cli.py`` only dispatches to them.

``train`` with ``task: audio-classify`` (an AST, a wav2vec2 classifier or an MLP on openSMILE
functionals) and ``evaluate`` of a ``family: ast``, ``wav2vec2-classify`` or ``smile-classify``
run (imported ones included; ``AudioClassifier.load`` tells them apart). Errors a user can
cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def train_audio(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Train an AST, a wav2vec2 or an openSMILE classifier; print the test accuracy and
    macro-F1 of the best checkpoint."""
    from seqformer.cli import classifier_trained
    from seqformer.tasks.audio import train_audio_classifier

    return classifier_trained(args, out, *train_audio_classifier(recipe, out,
                                                                 resume=args.resume))


def evaluate_audio(args: argparse.Namespace) -> int:
    """Score an audio classifier run (AST, wav2vec2 or openSMILE) on a clip list (``--data`` TSV of
    path.wav<TAB>label, or a directory of LABEL/*.wav) or on its recipe's test split; print the
    metrics and the confusions."""
    from seqformer.cli import data_or_test_split
    from seqformer.data.speech import read_clip_list
    from seqformer.tasks.audio import AudioClassifier, confusion_summary
    from seqformer.tasks.classify import describe

    device = getattr(args, "device", "cpu") or "cpu"
    classifier = AudioClassifier.load(args.model[0], "cpu" if device == "auto" else device)
    data, where = data_or_test_split(
        args, classifier, read_clip_list,
        "one --data TSV (path.wav<TAB>label) or directory for an audio classifier",
        "FILE.tsv (path.wav<TAB>label lines)")
    metrics, predicted = classifier.evaluate(data, where)
    print(f"{where} ({len(data)} clips): {describe(metrics)}")
    for line in confusion_summary(data.labels, predicted):
        print(f"  {line}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
