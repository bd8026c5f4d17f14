"""Command-line bodies of the image-captioning family (``task: image-caption``, family
``captioner``): ``train``, ``evaluate`` and ``caption``.

cli.py dispatches here on the recipe's task and on config.json's family; the subcommand
``caption`` is registered by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_caption(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: image-caption``."""
    raise UserError("task: image-caption is not implemented yet")


def evaluate_caption(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for a captioner: ``--data`` or the test split."""
    raise UserError("evaluating a captioner is not implemented yet")


def cmd_caption(args: argparse.Namespace) -> int:
    """``seqformer caption --model RUN IMAGE ...``: one caption per image."""
    raise UserError("caption is not implemented yet")


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
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_caption)
