"""Data-parallel training under ``torchrun``: one process per device, one global batch.

Every rank reads the same stream of *global* batches (streams are seeded from the recipe, so
they agree without communication) and trains on its own slice of rows (``rank::world``). Each
rank's mean loss is reweighted by its share of the global batch's target tokens, so after
DistributedDataParallel averages the gradients they equal the gradient of the global batch's
mean loss -- the same update one process would make on the whole batch. The recipe's batch size
therefore means the same thing on 1 or N processes, and N processes only make it faster.

Rank 0 alone writes logs and checkpoints; every rank validates (deterministically, on the same
weights) so early-stopping and time-budget decisions agree without extra messages.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job; ``world == 1`` is an ordinary single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def context_from_env() -> Context:
    """The job layout ``torchrun`` exports (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Context(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Whether this process writes the run's files: always, unless it is a rank > 0."""
    return context_from_env().main


def init(ctx: Context, device_type: str) -> None:
    """Join the process group: NCCL between GPUs, gloo on CPU."""
    if ctx.active and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def any_rank(ctx: Context, flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any: decisions that must agree (time budget)."""
    if not ctx.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def global_mean(ctx: Context, weighted: Tensor) -> Tensor:
    """Sum of the ranks' token-weighted losses over ``world``: the global batch's mean loss."""
    total = weighted.clone()
    dist.all_reduce(total)
    return total / ctx.world


def _rows(batch: Any) -> int:
    if hasattr(batch, "__len__"):
        return len(batch)
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise TypeError(f"cannot tell the number of rows of {type(batch).__name__}")


def shard(batch: Any, ctx: Context) -> tuple[Any, float]:
    """This rank's rows of a global batch and the weight of its mean loss.

    The weight is ``world * rank_tokens / global_tokens``: DDP divides the summed gradients by
    ``world``, so the weighted per-rank means add up to the global token mean. A rank left
    without rows (a global batch smaller than the job) trains on row 0 with weight 0, so every
    rank still joins the gradient all-reduce.
    """
    if not ctx.active:
        return batch, 1.0
    if hasattr(batch, "shard"):
        return batch.shard(ctx.rank, ctx.world)
    rows = _rows(batch)
    index = torch.arange(ctx.rank, rows, ctx.world)
    empty = index.numel() == 0
    if empty:
        index = torch.zeros(1, dtype=torch.long)
    values = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows:
            value = value.index_select(0, index.to(value.device))
        values[f.name] = value
    part = type(batch)(**values)
    total = int(batch.n_tgt_tokens)
    if empty or total == 0:
        return part, 0.0
    return part, ctx.world * int(part.n_tgt_tokens) / total
