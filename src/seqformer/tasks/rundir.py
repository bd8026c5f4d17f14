"""The metadata every run directory carries next to its weights, written the same way for every
task: ``recipe.yaml`` (the resolved recipe plus fingerprints of the split and tokenizers) and
``config.json`` (the model shape, with ``family`` telling loaders which class to build)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from seqformer.errors import CheckpointError
from seqformer.training.checkpoint import atomic_write_text
from seqformer.training.distributed import is_main_process


def log(message: str) -> None:
    """A progress line on stderr, from rank 0 only: N processes would print it N times."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def check_vocabulary(run_dir: Path, tokenizer_size: int, model_size: int) -> None:
    """A run's tokenizer must have the vocabulary its weights were trained with; a replaced
    tokenizer would otherwise decode ids into the wrong text without any error."""
    if tokenizer_size != model_size:
        raise CheckpointError(f"{run_dir}: the tokenizer vocabulary ({tokenizer_size}) does not "
                              f"match the model ({model_size}); re-train or restore the run")


def write_run_metadata(directory: Path, recipe: Any, fingerprints: dict[str, str],
                       model_config: dict[str, Any]) -> None:
    """Atomically (re)write recipe.yaml and config.json; called at start and at every save.

    Under torchrun only rank 0 writes (every rank calls this with the same content).
    """
    if not is_main_process():
        return
    directory.mkdir(parents=True, exist_ok=True)
    resolved = recipe.to_dict()
    resolved["fingerprints"] = fingerprints
    atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(directory / "config.json", json.dumps(model_config, indent=2) + "\n")
