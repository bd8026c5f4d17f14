"""Fully sharded data parallel training (``train.fsdp: true`` under ``torchrun``).

DDP keeps a whole copy of the weights, gradients and Adam moments on every device: 16 bytes per
parameter in fp32, which is what stops a model from fitting long before the activations do.
FSDP (PyTorch's ``fully_shard``, "FSDP2") keeps only ``1/world`` of each on a rank and gathers a
layer's weights just for its forward and backward. Everything else -- the global batch, its
row shards and their token weights (:mod:`seqformer.training.distributed`) -- is the same as
DDP, so the update is the same as one process on the whole batch.

Each element of every ``nn.ModuleList`` (the layer stacks of every model here) becomes one
sharding unit, the root module holds the rest (embeddings, final norm, output projection).

Three things a DDP run does with plain tensors need whole tensors here, and this module gives
them one call each:

- evaluation: decoding calls methods such as ``encode`` and ``decode_step`` that FSDP's
  forward hooks never see, so :func:`gathered` holds every layer's full weights for the
  duration (the memory an inference copy needs anyway);
- checkpoints: :func:`full_state_dict` and :func:`optimizer_state` gather the shards into the
  same files a single process writes (only rank 0 receives them), so a run trained sharded
  loads anywhere, and resumes sharded or not;
- resuming: :func:`load_state_dict` and :func:`load_optimizer_state` scatter them back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

# torch.distributed.fsdp / .checkpoint take most of a second to import, and only a sharded run
# needs them: they are imported in the functions, keeping every other command's start-up fast.


def _options(gather: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=gather)


def shard_model(model: nn.Module) -> None:
    """Shard ``model`` in place over the default process group (call after freezing)."""
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for layer in module:
                if any(True for _ in layer.parameters()):
                    fully_shard(layer)
    fully_shard(model)


def _units(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Hold the full weights on every rank, for code that calls more than ``forward``."""
    units = _units(model)
    for unit in units:
        unit.set_reshard_after_forward(False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # The root keeps FSDP's own default (False): its weights are needed again at once
            # by the backward pass.
            unit.set_reshard_after_forward(unit is not model)


def as_plain(value: Tensor) -> Tensor:
    """A norm or loss computed from sharded tensors, as an ordinary tensor."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole model's weights on rank 0 (``{}`` elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(gather=True))


def load_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Scatter a full state dict (read by every rank) into the shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    # A copy: the call replaces the dict's values with this rank's shards.
    set_model_state_dict(model, dict(state), options=_options(gather=False))


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters, in its order (its state's integer keys)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state on rank 0, keyed like ``optimizer.state_dict()``.

    FSDP's gathered state is keyed by parameter name; renumbering it in the optimizer's own
    order makes the checkpoint the one a single process writes.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    named = get_optimizer_state_dict(model, optimizer, options=_options(gather=True))
    if not named:
        return {}
    index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
    return {
        "state": {index[name]: value for name, value in named.get("state", {}).items()},
        "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                         for group in named["param_groups"]],
    }


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: Mapping[str, Any]) -> None:
    """Scatter a state from :func:`optimizer_state` (or an unsharded run) into the shards."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _parameter_names(model, optimizer)
    named = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                         for group in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, named, options=_options(gather=False))
