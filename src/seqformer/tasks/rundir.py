"""The metadata every run directory carries next to its weights, written the same way for every
task: ``recipe.yaml`` (the resolved recipe plus fingerprints of the split and tokenizers) and
``config.json`` (the model shape, with ``family`` telling loaders which class to build)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from seqformer.errors import CheckpointError, DataError
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


def read_run_recipe(run_dir: str | Path, purpose: str, instead: str) -> tuple[Any, Path]:
    """The recipe a run was trained with (from its recipe.yaml) and that file's path, for
    commands that re-read the run's own data; ``purpose`` names what is looked up and
    ``instead`` what the user can give in its place."""
    from seqformer.recipe import recipe_from_dict

    path = Path(run_dir) / "recipe.yaml"
    recipe = recipe_if_saved(run_dir, recipe_from_dict)
    if recipe is None:
        raise CheckpointError(f"{path}: missing, so {purpose} is unknown; {instead}")
    return recipe, path


def recipe_if_saved(run_dir: str | Path, from_dict: Any) -> Any:
    """The run's recipe.yaml read by ``from_dict(data, where)``, or None when there is none
    (an imported model)."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        return None
    return from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def check_same_split(recipe: Any, fingerprint: str, where: Path, instead: str) -> None:
    """Re-reading a corpus gives the split a run was trained on only if the data did not
    change since (a new package release, an edited file): otherwise scores would silently
    refer to other examples -- or to training ones."""
    trained = getattr(recipe, "fingerprints", {}).get("split")
    if trained and trained != fingerprint:
        raise DataError(f"{where}: the recipe's data now gives split {fingerprint}, the model "
                        f"was trained on split {trained} (the data changed since training); "
                        f"{instead}")
