"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

Pickle files execute code when loaded, so a model downloaded from somewhere must never be one.
Splitting state into "tensors" and "plain data" also makes checkpoints inspectable with any
JSON viewer and loadable without seqformer.

Crash safety comes in two layers. Each file is written with :func:`atomic_write`, so a crash
leaves either the old or the new file, never a truncated one. A checkpoint made of several files
(weights + optimizer tensors + JSON) is written into a scratch directory and swapped in with
:func:`commit_directory`, so the files that belong together always stay together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from seqformer.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
STATE_TENSORS_NAME = "trainer_state.safetensors"
STATE_JSON_NAME = "trainer_state.json"
_ALIASES_KEY = "seqformer.aliases"
_STATE_FORMAT = "seqformer.trainer_state/1"


# --------------------------------------------------------------------------------------------
# Atomic files and directories
# --------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: on POSIX the directory entry lives in the directory's own inode."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write_fn: Callable[[Path], None]) -> None:
    """Create or replace ``path`` so readers see either the old file or the whole new one.

    ``write_fn`` receives a temporary path in the same directory (``os.replace`` is only atomic
    within a filesystem) and must write the complete file there; it takes a path rather than a
    file object because safetensors writes by filename. The data is fsynced before the rename,
    otherwise a power cut can leave the *new* name pointing at an empty file. If ``write_fn``
    raises -- or Ctrl-C arrives -- the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write a UTF-8 text file (JSON, logs)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def commit_directory(scratch: str | Path, final: str | Path) -> None:
    """Replace directory ``final`` by the fully written ``scratch`` directory.

    Directories cannot be swapped atomically, so the old one is parked at ``final.old`` until
    the new one is in place: at every instant at least one complete copy exists, and
    :func:`committed_directory` knows where to find it after a crash.
    """
    scratch, final = Path(scratch), Path(final)
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(scratch, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def committed_directory(final: str | Path) -> Path | None:
    """Where the last complete :func:`commit_directory` of ``final`` lives, or None if nowhere."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if final.is_dir():
        return final
    if old.is_dir():  # crashed between the two renames of commit_directory
        return old
    return None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Model weights
# --------------------------------------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose ``state_dict`` keys are canonical: ``torch.compile`` adds ``_orig_mod.``."""
    return getattr(model, "_orig_mod", model)


def _storage_key(t: Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _split_aliases(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Separate tied tensors into one stored copy plus ``{alias_key: stored_key}``.

    safetensors refuses tensors that share memory. Exact aliases (same storage, offset, shape
    and strides -- weight tying) are stored once and recorded, so loading can feed the same
    values to every key and strict ``load_state_dict`` still sees all keys. Any other sharing
    (e.g. slices of one fused buffer) is stored as independent copies, which is lossless.
    """
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first_key_of_view: dict[tuple, str] = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        if tensor.numel() > 0:
            view = (
                *_storage_key(tensor),
                tensor.storage_offset(),
                tuple(tensor.shape),
                tensor.stride(),
                tensor.dtype,
            )
            if view in first_key_of_view:
                aliases[key] = first_key_of_view[view]
                continue
            first_key_of_view[view] = key
        tensors[key] = tensor

    users: dict[tuple[str, int], int] = {}
    for tensor in tensors.values():
        if tensor.numel() > 0:
            users[_storage_key(tensor)] = users.get(_storage_key(tensor), 0) + 1
    for key, tensor in tensors.items():
        shared = tensor.numel() > 0 and users[_storage_key(tensor)] > 1
        if shared or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        tensors[key] = tensor.cpu()
    return tensors, aliases


def save_weights(
    model_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Atomically write a model's ``state_dict`` (or a given one) as safetensors.

    Tied weights are stored once; see :func:`_split_aliases`. ``metadata`` is free-form
    string data kept in the file header (safetensors allows only ``str -> str``).
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = unwrap_model(model_or_state_dict).state_dict()
    else:
        state = dict(model_or_state_dict)
    tensors, aliases = _split_aliases(state)
    header = {"format": "pt", **(metadata or {})}
    if aliases:
        header[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a file written by :func:`save_weights` into a CPU state dict, tied keys restored."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: weights file not found; check the path, or train a model into that "
            f"directory first"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
        aliases = json.loads(header.get(_ALIASES_KEY, "{}"))
        for alias, stored in aliases.items():
            state[alias] = state[stored]
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable safetensors weights file ({reason}); the file is corrupt "
            f"or truncated -- delete it and re-train or re-download it"
        ) from e
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights saved by :func:`save_weights` into ``model`` (in place; also returned).

    Keys and shapes are checked first so the error names the first mismatch in one line --
    ``load_state_dict``'s own message lists every key and is unreadable for real models.
    Values are copied into the existing parameters, so device, dtype and weight tying of
    ``model`` are kept. A model's ``obsolete_keys`` are dropped from the file first.
    """
    path = Path(path)
    module = unwrap_model(model)
    state = read_weights(path)
    # Keys older versions of a model saved but never read (the model lists them): ignored, so
    # a run keeps resuming across that change instead of being refused as a mismatch.
    for key in getattr(module, "obsolete_keys", ()):
        state.pop(key, None)
    check_state(state, module.state_dict(), path)
    module.load_state_dict(state, strict=True)
    return model


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], path: Path) -> None:
    """Fail in one line on the first key or shape of ``state`` that ``expected`` lacks."""
    fix = "build the model with the config the checkpoint was trained with (its config.json)"
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: parameter {key!r} is missing from the file; {fix}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: parameter {key!r} has shape {tuple(state[key].shape)} in the file "
                f"but {tuple(tensor.shape)} in the model; {fix}"
            )
    for key in state:
        if key not in expected:
            raise CheckpointError(
                f"{path}: the file has parameter {key!r} that the model does not; {fix}"
            )


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Snapshot every RNG that training may draw from (dropout, shuffling, sampling)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot from :func:`get_rng_state`.

    CUDA states are restored only for devices that exist now: a run moved from GPU to CPU can
    still resume, it just cannot be bit-identical.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without letting it advance the training RNGs.

    Evaluation (which may sample) then never changes the training trajectory, so a run that
    evaluates more often -- or resumes, and evaluates at a different step -- stays identical.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _rng_to_serialisable(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    json_part = {
        "python": [version, list(internal), gauss],
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "cuda_devices": len(state.get("cuda", [])),
    }
    tensors = {"rng.torch": state["torch"].clone()}
    for device, device_state in enumerate(state.get("cuda", [])):
        tensors[f"rng.cuda.{device}"] = device_state.clone()
    return json_part, tensors


def _rng_from_serialisable(json_part: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> dict:
    version, internal, gauss = json_part["python"]
    name, keys, pos, has_gauss, cached = json_part["numpy"]
    return {
        "python": (version, tuple(internal), gauss),
        "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
        "torch": tensors["rng.torch"],
        "cuda": [tensors[f"rng.cuda.{i}"] for i in range(json_part["cuda_devices"])],
    }


# --------------------------------------------------------------------------------------------
# Optimizer, scheduler and RNG state for resuming
# --------------------------------------------------------------------------------------------


_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def save_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    extra: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None = None,
) -> None:
    """Write everything besides the weights that a bit-identical resume needs.

    Tensors (optimizer moments as ``state.{param_idx}.{name}``, RNG states as ``rng.*``) go to
    ``trainer_state.safetensors``; the rest (param_groups, scheduler counters, step, ``extra``,
    Python/NumPy RNG states) to ``trainer_state.json``. The JSON is written last and records
    the SHA-256 of the tensor file: it is the commit marker, so a tensor file without its
    matching JSON is never used. ``extra`` must be JSON-serialisable (strict: no NaN/inf).
    ``optimizer_state`` replaces ``optimizer.state_dict()`` when the optimizer holds only a
    shard of it (FSDP gathers the whole state first; see :mod:`seqformer.training.fsdp`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    opt_state = optimizer.state_dict() if optimizer_state is None else optimizer_state

    tensors: dict[str, Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, param_state in opt_state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(idx), {})[name] = value
    param_groups = []
    for i, group in enumerate(opt_state["param_groups"]):
        plain_group = {}
        for name, value in group.items():
            if isinstance(value, Tensor):  # e.g. a tensor lr with capturable=True
                tensors[f"param_groups.{i}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain_group[name] = value
        param_groups.append(plain_group)

    rng_json, rng_tensors = _rng_to_serialisable(get_rng_state())
    tensors.update(rng_tensors)

    tensor_path = directory / STATE_TENSORS_NAME
    atomic_write(tensor_path, lambda tmp: save_file(tensors, str(tmp), {"step": str(step)}))
    record = {
        "format": _STATE_FORMAT,
        "step": step,
        "tensors_file": STATE_TENSORS_NAME,
        "tensors_sha256": file_sha256(tensor_path),
        "optimizer": {"param_groups": param_groups, "state": plain_state},
        "scheduler": scheduler.state_dict(),
        "rng": rng_json,
        "extra": dict(extra),
    }
    atomic_write_text(directory / STATE_JSON_NAME, json.dumps(record, allow_nan=False) + "\n")


def load_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    load_optimizer: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Restore optimizer, scheduler and all RNGs from :func:`save_training_state`.

    Returns ``(step, extra)``. The optimizer must have been built over the same parameters in
    the same order; its tensors are moved to the parameters' device by ``load_state_dict``.
    Call this last before training continues: anything that draws random numbers afterwards
    would shift the restored streams. ``load_optimizer`` replaces
    ``optimizer.load_state_dict`` (FSDP scatters the state into the shards).
    """
    directory = Path(directory)
    json_path = directory / STATE_JSON_NAME
    redo = f"delete {directory} and restart training, or resume from a backup copy"
    if not json_path.is_file():
        raise CheckpointError(f"{json_path}: not found, so {directory} is no checkpoint; {redo}")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != _STATE_FORMAT:
            raise ValueError("not a seqformer trainer state")
        for field in ("step", "tensors_sha256", "optimizer", "scheduler", "rng", "extra"):
            if field not in record:
                raise ValueError(f"field {field!r} is missing")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{json_path}: unreadable trainer state ({e}); {redo}") from e

    # The name is fixed rather than read from the JSON, so a tampered file cannot point us
    # at arbitrary paths.
    tensor_path = directory / STATE_TENSORS_NAME
    if not tensor_path.is_file() or file_sha256(tensor_path) != record["tensors_sha256"]:
        raise CheckpointError(
            f"{tensor_path}: missing or does not match {json_path.name} (SHA-256 differs); "
            f"the checkpoint is incomplete or corrupt -- {redo}"
        )
    try:
        with safe_open(str(tensor_path), framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{tensor_path}: unreadable ({e}); {redo}") from e

    state: dict[int, dict[str, Any]] = {}
    for idx, plain in record["optimizer"]["state"].items():
        state.setdefault(int(idx), {}).update(plain)
    param_groups = [dict(group) for group in record["optimizer"]["param_groups"]]
    for key, tensor in tensors.items():
        kind, _, rest = key.partition(".")
        if kind in ("state", "param_groups"):
            index, _, name = rest.partition(".")
            if kind == "state":
                state.setdefault(int(index), {})[name] = tensor
            else:
                param_groups[int(index)][name] = tensor
    for group, current in zip(param_groups, optimizer.param_groups, strict=False):
        if isinstance(group.get("betas"), list):  # JSON has no tuples
            group["betas"] = tuple(group["betas"])
        # How the update is computed is this run's choice, not the checkpoint's: a fused
        # kernel saved on one process cannot step FSDP's sharded tensors after a resume.
        for key in _IMPLEMENTATION_KEYS:
            if key in current:
                group[key] = current[key]
    try:
        load = load_optimizer or optimizer.load_state_dict
        load({"state": state, "param_groups": param_groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"{tensor_path}: the optimizer state does not fit this model ({e}); resume with the "
            f"same model config and train.freeze the run was started with"
        ) from e
    scheduler.load_state_dict(record["scheduler"])
    set_rng_state(_rng_from_serialisable(record["rng"], tensors))
    return int(record["step"]), record["extra"]
