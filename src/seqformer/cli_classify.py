"""``seqformer classify --model RUN INPUT ...``: the label of each input, for every classifier.

One command for the three kinds of classifier runs, told apart by the run's model family:
texts for a BERT classify head, the CNN or a recurrent classifier (a tab makes a text
pair), image files for a ViT,
WAV files for the audio classifiers (AST, wav2vec 2.0, openSMILE). Each line printed is
``input<TAB>label<TAB>probability``, then the next likeliest with ``--top-k``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import DataError, UserError

TEXT = ("bert", "cnn", "rnn-classify")
AUDIO = ("ast", "wav2vec2-classify", "smile-classify")
IMAGE = ("vit",)


def read_image_inputs(paths: list[str], classifier: Any) -> Any:
    """Image files as the ViT takes them: any size or channel count (resized and converted
    like a caption model's inputs); 8-bit PNG levels scaled to the pixel units the model
    was trained in (e.g. 0-16 for digits), ``.npy`` arrays taken as stored."""
    import numpy as np

    from seqformer.data.shapes import fit_image, read_image

    c, pixel_max = classifier.model.config, classifier.preprocess.pixel_max
    images = []
    for path in paths:
        image = read_image(path, "image")
        if Path(path).suffix.lower() == ".png":
            image = image * (pixel_max / 255.0)
        images.append(fit_image(image, c.channels, c.image_size))
    return np.stack(images)


def cmd_classify(args: argparse.Namespace) -> int:
    from seqformer.cli import _device, _family

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    family = _family(args.model)
    inputs = list(args.inputs)
    if not inputs and family in TEXT:
        inputs = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise UserError("classify: give inputs (texts, image files or WAV files)"
                        + (" or lines on stdin" if family in TEXT else ""))
    device = _device(args.device)
    if family in TEXT:
        from seqformer.tasks.encoder import EncoderRun

        ranked = EncoderRun.load(args.model, device).classify(inputs, args.top_k)
    elif family in AUDIO or family in IMAGE:
        for path in inputs:  # before the model: a bad path fails fast
            if not Path(path).is_file():
                raise DataError(f"{path}: no such file")
        if family in AUDIO:
            from seqformer.tasks.audio import AudioClassifier

            ranked = AudioClassifier.load(args.model, device).rank(inputs, args.top_k)
        else:
            from seqformer.tasks.vision import ImageClassifier

            classifier = ImageClassifier.load(args.model, device)
            ranked = classifier.rank(read_image_inputs(inputs, classifier), args.top_k)
    else:
        raise UserError(f"{args.model} is a {family} run; classify takes a classifier (text: "
                        "BERT classify, CNN or RNN; images: ViT; audio: AST, wav2vec 2.0, "
                        "openSMILE)")
    for source, labels in zip(inputs, ranked):
        shown = "\t".join(f"{label}\t{p:.4f}" for label, p in labels)
        print(f"{source}\t{shown}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``classify``."""
    p = sub.add_parser("classify", help="label texts, images or audio with a classifier run")
    p.add_argument("inputs", nargs="*", help="texts (a tab makes a pair; none: lines on stdin), "
                   "image files (.png, .npy) or WAV files, by the kind of run")
    p.add_argument("--model", required=True, help="run directory of a classifier")
    p.add_argument("--top-k", type=int, default=1, help="labels shown per input, likeliest "
                   "first, each with its probability (default 1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.set_defaults(func=cmd_classify)
