"""Helpers the benchmark scripts share (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch


def hardware() -> str:
    """What the figures were measured on, for RESULTS.md."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def emit(result: dict, json_path: str | None) -> None:
    """Print the result as one JSON line (for RESULTS.md) and optionally write it to a file."""
    line = json.dumps(result)
    print(line)
    if json_path:
        Path(json_path).write_text(line + "\n")
    sys.stdout.flush()
