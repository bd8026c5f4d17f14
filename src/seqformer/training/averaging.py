"""Checkpoint averaging: the mean of the last few checkpoints of a run, as a loadable model.

Averaging the weights of the last N checkpoints (Vaswani et al. 2017; fairseq's
``average_checkpoints.py``) usually gains a little BLEU for free: late checkpoints sit around
the same minimum, and their mean is closer to its centre than any one of them. The trainer
keeps the checkpoints when ``train.keep_checkpoints`` is set (see :func:`checkpoint_path`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from seqformer.errors import CheckpointError, ConfigError
from seqformer.training.checkpoint import WEIGHTS_NAME, read_weights, save_weights

CHECKPOINTS_DIR = "checkpoints"
# Files copied from the run next to the averaged weights, so the result is a complete model
# directory that `transduce`, `evaluate` and `generate` accept as they are.
RUN_FILES = ("config.json", "recipe.yaml")
RUN_DIRS = ("tokenizer",)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the trainer keeps the weights of ``step``; zero-padded so names sort by step."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:07d}.safetensors"


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """The kept checkpoints of a run, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("step-*.safetensors"))


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, so disk use stays bounded."""
    paths = checkpoint_paths(run_dir)
    for path in paths[: max(len(paths) - keep, 0)]:
        path.unlink(missing_ok=True)


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Tensor]:
    """Elementwise mean of the state dicts in ``paths``.

    Sums run in float64 and are cast back to each tensor's dtype at the end, so the result does
    not depend on the order of the files and the mean of identical checkpoints is exactly the
    checkpoint. Every file must hold the same keys with the same shapes, or the first mismatch
    is a :class:`CheckpointError` -- averaging different models is never what was meant.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average; give at least one weights file")
    first = Path(paths[0])
    reference = read_weights(first)
    sums = {key: tensor.to(torch.float64) for key, tensor in reference.items()}
    for path in paths[1:]:
        state = read_weights(path)
        for key, tensor in reference.items():
            if key not in state:
                raise CheckpointError(f"{path}: parameter {key!r} of {first} is missing; only "
                                      "checkpoints of the same model can be averaged")
            if state[key].shape != tensor.shape:
                raise CheckpointError(
                    f"{path}: parameter {key!r} has shape {tuple(state[key].shape)} but "
                    f"{tuple(tensor.shape)} in {first}; only checkpoints of the same model "
                    "can be averaged")
        for key in state:
            if key not in reference:
                raise CheckpointError(f"{path}: parameter {key!r} is not in {first}; only "
                                      "checkpoints of the same model can be averaged")
        for key in sums:
            sums[key] += state[key].to(torch.float64)
    return {key: (total / len(paths)).to(reference[key].dtype) for key, total in sums.items()}


def _model_of_run(run_dir: Path) -> nn.Module:
    """The run's model, so the averaged weights are saved with its weight tying intact."""
    from seqformer.models.gpt import GPT
    from seqformer.models.seq2seq import Seq2Seq, read_model_config

    family = read_model_config(run_dir).get("family", "seq2seq")
    return GPT.load(run_dir) if family == "gpt" else Seq2Seq.load(run_dir)


def average_run(run_dir: str | Path, last: int, out_dir: str | Path) -> list[Path]:
    """Average the ``last`` newest kept checkpoints of ``run_dir`` into the model dir ``out_dir``.

    ``out_dir`` gets the run's config, recipe and tokenizers plus the averaged
    ``model.safetensors``; the files averaged are recorded in its header and returned.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if last < 1:
        raise ConfigError(f"--last must be >= 1, got {last}")
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError(f"--out {out_dir} is the run directory itself; averaging there would "
                          "overwrite the best weights -- choose another directory")
    paths = checkpoint_paths(run_dir)
    if len(paths) < last:
        raise CheckpointError(
            f"{run_dir}: asked to average the last {last} checkpoints but "
            f"{len(paths)} exist in {run_dir / CHECKPOINTS_DIR}; train with "
            f"train.keep_checkpoints >= {last} (e.g. --set train.keep_checkpoints={last}) "
            "or lower --last")
    paths = paths[-last:]
    model = _model_of_run(run_dir)
    averaged = average_checkpoints(paths)
    try:
        model.load_state_dict(averaged, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{paths[0]}: the checkpoints do not fit the model in "
                              f"{run_dir / 'config.json'} ({str(exc).splitlines()[0]})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.copytree(run_dir / name, out_dir / name, dirs_exist_ok=True)
    sources = json.dumps([p.name for p in paths])
    save_weights(model, out_dir / WEIGHTS_NAME, metadata={"seqformer.averaged_from": sources})
    return paths
