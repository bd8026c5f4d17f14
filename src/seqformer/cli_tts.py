"""Command-line bodies of text to speech (``task: text-to-speech``, family ``speecht5-tts``):
``train``, ``evaluate`` and ``speak``.

cli.py dispatches here on the recipe's task and on config.json's family; the subcommand
``speak`` is registered by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_tts(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: text-to-speech``."""
    raise UserError("task: text-to-speech is not implemented yet")


def evaluate_tts(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for a text-to-speech run."""
    raise UserError("evaluating a text-to-speech run is not implemented yet")


def cmd_speak(args: argparse.Namespace) -> int:
    """``seqformer speak --model RUN TEXT ...``: one WAV file per text."""
    raise UserError("speak is not implemented yet")


def add_parsers(sub: Any) -> None:
    """Register ``speak``."""
    p = sub.add_parser("speak", help="text to speech: write WAV files with a text-to-speech run")
    p.add_argument("text", nargs="*", help="texts to say (default: lines of --input or stdin)")
    p.add_argument("--input", help="file with one text per line")
    p.add_argument("--model", required=True, help="run directory of a 'task: text-to-speech' "
                   "recipe (or an imported SpeechT5)")
    p.add_argument("--out", default="speech", help="WAV file for one text, else a directory "
                   "(default ./speech/)")
    p.add_argument("--vocoder", default="griffin-lim", help="griffin-lim (default) or the "
                   "directory of an imported HiFi-GAN vocoder")
    p.add_argument("--max-frames", type=int, default=None, help="longest output in "
                   "spectrogram frames")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_speak)
