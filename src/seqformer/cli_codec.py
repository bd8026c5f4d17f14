"""Command-line bodies of the neural-codec family: ``task: codec`` (train an EnCodec on speech,
family ``encodec``) and ``task: codec-tts`` (a VALL-E codec language model on its codes, family
``valle``): ``train``, ``evaluate`` and, for VALL-E runs, ``speak``.

cli.py dispatches here on the recipe's task and on config.json's family; cli_tts.py hands
``speak`` here for family ``valle``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_codec(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: codec`` and ``task: codec-tts``."""
    raise UserError(f"task: {recipe.task} is not implemented yet")


def evaluate_codec(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for an EnCodec or VALL-E run."""
    raise UserError("evaluating a codec run is not implemented yet")


def speak_valle(args: argparse.Namespace) -> int:
    """``seqformer speak --model VALLE_RUN [--prompt WAV] TEXT ...``."""
    raise UserError("speaking with a VALL-E run is not implemented yet")
