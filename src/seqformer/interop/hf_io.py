"""Reading and writing Hugging Face model directories (``save_pretrained`` layout), offline.

Only local directories are read: nothing is downloaded. Weights come from ``model.safetensors``
(or its sharded index); a pickled ``pytorch_model.bin`` can run arbitrary code when unpickled,
so it is read only when the caller passes ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """The directory's ``config.json`` as a dict; a missing or broken file is a user error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory; pass a local Hugging Face model "
                              "directory (one written by save_pretrained)")
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {directory} is not a Hugging Face model "
                              "directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); restore the file") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def model_type(config: dict[str, Any], directory: str | Path) -> str:
    kind = config.get("model_type")
    if not isinstance(kind, str):
        raise CheckpointError(f"{Path(directory) / 'config.json'}: no model_type field; is this "
                              "a transformers model directory?")
    return kind


def load_hf_state_dict(directory: str | Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """All tensors of the checkpoint in ``directory``, safetensors first."""
    from safetensors.torch import load_file

    directory = Path(directory)
    single, index = directory / SAFETENSORS, directory / SAFETENSORS_INDEX
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                .values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index}: unreadable ({exc}); restore the file") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            if not (directory / shard).is_file():
                raise CheckpointError(f"{directory / shard}: missing shard named in {index.name}")
            state.update(load_file(str(directory / shard)))
        return state
    pickled = directory / PICKLE
    if pickled.is_file():
        if not trust_pickle:
            raise CheckpointError(f"{pickled}: a pickle file, which can run code when loaded; "
                                  "pass --trust-pickle (trust_pickle=True) if you trust its "
                                  "source, or convert it to model.safetensors")
        import torch

        return torch.load(str(pickled), map_location="cpu", weights_only=False)
    raise CheckpointError(f"{directory}: no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE}; "
                          "pass a directory written by save_pretrained")


def load_checkpoint(directory: str | Path, model_type: str, model_cls: Any,
                    config_from_hf: Any, state_from_hf: Any, trust_pickle: bool = False) -> Any:
    """``model_cls`` built from the ``model_type`` checkpoint in ``directory`` through the
    architecture's two mappings (config, then tensors), strictly loaded, in eval mode."""
    hf_config = read_hf_config(directory)
    where = str(Path(directory) / "config.json")
    if hf_config.get("model_type") != model_type:
        raise CheckpointError(f"{where}: model_type={hf_config.get('model_type')!r}, "
                              f"not {model_type}")
    config = config_from_hf(hf_config, where)
    model = model_cls(config)
    state = state_from_hf(load_hf_state_dict(directory, trust_pickle), config, str(directory))
    model.load_state_dict(state, strict=True)
    return model.eval()


def take(state: dict[str, Tensor], name: str, directory: str | Path) -> Tensor:
    """Pop one tensor; a missing one means the checkpoint is not the architecture it claims."""
    try:
        return state.pop(name)
    except KeyError:
        raise CheckpointError(f"{directory}: weight {name!r} missing from the checkpoint; "
                              "the files are incomplete or not the architecture config.json "
                              "names") from None


def save_hf_dir(directory: str | Path, config: dict[str, Any], state: dict[str, Tensor]) -> None:
    """Write ``config.json`` and ``model.safetensors`` as ``save_pretrained`` would."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n",
                                           encoding="utf-8")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(directory / SAFETENSORS), metadata={"format": "pt"})
