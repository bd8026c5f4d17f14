"""Padding, token-budget batching and a resumable training stream.

Batches are packed by a *token* budget rather than a fixed example count: attention cost and
memory grow with ``batch * padded_length``, so grouping similar lengths and capping that
product keeps every step about the same size and wastes little compute on padding.

All randomness comes from a local ``random.Random`` seeded from ``(seed, epoch)``, so the batch
sequence of any epoch can be recomputed from two ints. That is what makes `BatchStream`
resumable without pickling iterator state: a checkpoint stores ``(epoch, position)`` only.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seqformer.data.device import to_device
from seqformer.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqformer.errors import CheckpointError, ConfigError, DataError


@dataclass
class Seq2SeqBatch:
    """Padded tensors for one step; `tgt_in`/`tgt_out` are None for inference batches.

    `tgt_in` is the decoder input ``[BOS] + y`` and `tgt_out` the prediction target
    ``y + [EOS]``; keeping both avoids every model re-deriving the teacher-forcing shift.
    `index` maps rows back to corpus examples so outputs can be written in input order.
    """

    src: Tensor
    tgt_in: Tensor | None
    tgt_out: Tensor | None
    index: Tensor

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        return Seq2SeqBatch(to_device(self.src, device), to_device(self.tgt_in, device),
                            to_device(self.tgt_out, device), to_device(self.index, device))

    @property
    def n_tgt_tokens(self) -> int:
        """Non-pad target tokens: the denominator for per-token loss and throughput."""
        return 0 if self.tgt_out is None else int((self.tgt_out != PAD_ID).sum())

    def __len__(self) -> int:
        return int(self.src.shape[0])


def _pad(rows: Sequence[Sequence[int]]) -> Tensor:
    """Right-pad rows with PAD_ID using two tensor constructions, not one per row: at GPU batch
    sizes (thousands of rows) the per-row copies cost ~8x more and starve the device."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    if width:
        filled = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
        out[filled] = torch.tensor(list(itertools.chain.from_iterable(rows)), dtype=torch.long)
    return out


def collate_pairs(
    src_ids: list[list[int]], tgt_ids: list[list[int]] | None, index: list[int]
) -> Seq2SeqBatch:
    """Pad ids (which carry no BOS/EOS) into a batch, adding BOS/EOS on the target side."""
    if len(src_ids) != len(index) or (tgt_ids is not None and len(tgt_ids) != len(index)):
        raise ValueError("src_ids, tgt_ids and index must have the same length")
    tgt_in = tgt_out = None
    if tgt_ids is not None:
        tgt_in = _pad([[BOS_ID, *y] for y in tgt_ids])
        tgt_out = _pad([[*y, EOS_ID] for y in tgt_ids])
    return Seq2SeqBatch(_pad(src_ids), tgt_in, tgt_out, torch.tensor(index, dtype=torch.long))


def _rng(seed: int, epoch: int) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return random.Random(f"seqformer.batching:{seed}:{epoch}")


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, shuffle: bool, seed: int, epoch: int = 0
) -> list[list[int]]:
    """Group example indices so that ``len(batch) * max_len_in_batch <= max_tokens``.

    Examples are sorted by length (random tie-breaking when `shuffle`, so equal-length
    examples meet different partners each epoch) and packed greedily; an example longer than
    the budget gets a batch of its own rather than being dropped. Without `shuffle` the
    result is a fixed, length-sorted order, which is what evaluation wants.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}; raise it")
    rng = _rng(seed, epoch)
    if shuffle:
        keys = [rng.random() for _ in lengths]
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], keys[i]))
    else:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order:
        n = max(lengths[i], 1)  # a zero-length example still occupies a row
        if batch and (len(batch) + 1) * max(longest, n) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, n)
    if batch:
        batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


class BatchStream:
    """Endless, resumable training batches: epoch after epoch, reshuffled each epoch.

    An example's length is ``max(len(src), len(tgt) + 1)`` - the larger padded dimension it
    adds, since the target gains BOS/EOS. `position` counts batches already yielded in
    `epoch`, so ``state_dict()`` taken after N batches resumes at batch N + 1.
    """

    def __init__(
        self, src_ids: list[list[int]], tgt_ids: list[list[int]], max_tokens: int, seed: int
    ) -> None:
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"{len(src_ids)} sources but {len(tgt_ids)} targets")
        if not src_ids:
            raise DataError("no training examples left; check the corpus and the max_len filter")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}; raise it")
        self.src_ids, self.tgt_ids = src_ids, tgt_ids
        self.max_tokens, self.seed = max_tokens, seed
        self.lengths = [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids, strict=True)]
        self.epoch = 0
        self.position = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._plan is None or self._plan[0] != epoch:
            plan = token_budget_batches(self.lengths, self.max_tokens, True, self.seed, epoch)
            self._plan = (epoch, plan)
        return self._plan[1]

    @property
    def batches_per_epoch(self) -> int:
        """Constant across epochs: shuffling only permutes equal lengths and batch order."""
        return len(self._batches(self.epoch))

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        while True:
            batches = self._batches(self.epoch)
            while self.position < len(batches):
                idx = batches[self.position]
                self.position += 1
                yield collate_pairs(
                    [self.src_ids[i] for i in idx], [self.tgt_ids[i] for i in idx], idx
                )
            self.epoch += 1
            self.position = 0

    def _identity(self) -> dict[str, int]:
        """What must match for a saved position to mean the same batches after a restart."""
        checksum = zlib.crc32(",".join(map(str, self.lengths)).encode("ascii"))
        return {
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "num_examples": len(self.lengths),
            "lengths_crc32": checksum,
        }

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where `state` was taken; refuse if data or settings changed since."""
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise CheckpointError(
                    f"cannot resume the batch stream: saved {key}={state.get(key)} but this run "
                    f"has {value}; resume with the same data, seed and max_tokens"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
