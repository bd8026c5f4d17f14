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
    pad_id: int = PAD_ID  # an imported model's own (interop.finetune.with_model_ids)

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        return Seq2SeqBatch(to_device(self.src, device), to_device(self.tgt_in, device),
                            to_device(self.tgt_out, device), to_device(self.index, device),
                            self.pad_id)

    @property
    def n_tgt_tokens(self) -> int:
        """Non-pad target tokens: the denominator for per-token loss and throughput."""
        return 0 if self.tgt_out is None else int((self.tgt_out != self.pad_id).sum())

    def __len__(self) -> int:
        return int(self.src.shape[0])


def _pad(rows: Sequence[Sequence[int]], width: int | None = None,
         dtype: torch.dtype = torch.long) -> Tensor:
    """Right-pad rows with PAD_ID to ``width`` (default: the longest row) using two tensor
    constructions, not one per row: at GPU batch sizes (thousands of rows) the per-row copies
    cost ~8x more and starve the device. The training stream keeps a whole corpus padded as
    int32 (half the memory) and widens each batch when it gathers it."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    if width is None:
        width = int(lengths.max()) if len(rows) else 0
    out = torch.full((len(rows), width), PAD_ID, dtype=dtype)
    if width:
        filled = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
        out[filled] = torch.tensor(list(itertools.chain.from_iterable(rows)), dtype=dtype)
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

    The whole corpus is padded into three tensors once, so a batch is two tensor gathers
    instead of a Python loop over its rows: at GPU batch sizes (thousands of rows) the loop
    cost milliseconds per step, which a small model's GPU step cannot hide.

    ``pad_to`` > 0 gives every batch one of a few fixed shapes, for CUDA graphs
    (``train.compile: reduce-overhead``) that capture one graph per shape: lengths are rounded
    up to a multiple of ``pad_to`` (source and target both padded to it), and each batch of
    width ``W`` has exactly ``max_tokens // W`` rows. Rows beyond the examples are copies of
    row 0 with an all-padding target (``index`` -1): they carry no loss and no gradient.
    """

    def __init__(
        self, src_ids: list[list[int]], tgt_ids: list[list[int]], max_tokens: int, seed: int,
        pad_to: int = 0,
    ) -> None:
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"{len(src_ids)} sources but {len(tgt_ids)} targets")
        if not src_ids:
            raise DataError("no training examples left; check the corpus and the max_len filter")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}; raise it")
        if pad_to < 0:
            raise ConfigError(f"pad_to must be >= 0 (0: no fixed shapes), got {pad_to}")
        self.max_tokens, self.seed, self.pad_to = max_tokens, seed, pad_to
        self.lengths = [self._round(max(len(s), len(t) + 1))
                        for s, t in zip(src_ids, tgt_ids, strict=True)]
        self._src = _pad(src_ids, self._round(max(map(len, src_ids))), torch.int32)
        width = self._round(max(map(len, tgt_ids)) + 1)
        self._tgt_in = _pad([[BOS_ID, *y] for y in tgt_ids], width, torch.int32)
        self._tgt_out = _pad([[*y, EOS_ID] for y in tgt_ids], width, torch.int32)
        self._src_len = torch.tensor([len(s) for s in src_ids])
        self._tgt_len = torch.tensor([len(t) + 1 for t in tgt_ids])
        self.epoch = 0
        self.position = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    def _round(self, n: int) -> int:
        p = self.pad_to
        return -(-n // p) * p if p else n

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._plan is None or self._plan[0] != epoch:
            plan = token_budget_batches(self.lengths, self.max_tokens, True, self.seed, epoch)
            self._plan = (epoch, plan)
        return self._plan[1]

    @property
    def batches_per_epoch(self) -> int:
        """Constant across epochs: shuffling only permutes equal lengths and batch order."""
        return len(self._batches(self.epoch))

    def collate(self, idx: list[int]) -> Seq2SeqBatch:
        """The batch of examples ``idx``: what ``collate_pairs`` builds from their ids."""
        rows = torch.tensor(idx, dtype=torch.long)
        src_width = int(self._src_len.index_select(0, rows).max())
        tgt_width = int(self._tgt_len.index_select(0, rows).max())
        if self.pad_to:
            src_width = tgt_width = self._round(max(src_width, tgt_width))
        src = self._src[:, :src_width].index_select(0, rows).long()
        tgt_in = self._tgt_in[:, :tgt_width].index_select(0, rows).long()
        tgt_out = self._tgt_out[:, :tgt_width].index_select(0, rows).long()
        extra = max(1, self.max_tokens // src_width) - len(idx) if self.pad_to else 0
        if extra > 0:
            src = torch.cat([src, src[:1].expand(extra, -1)])
            tgt_in = torch.cat([tgt_in, tgt_in[:1].expand(extra, -1)])
            tgt_out = torch.cat([tgt_out, tgt_out.new_full((extra, tgt_width), PAD_ID)])
            rows = torch.cat([rows, rows.new_full((extra,), -1)])
        return Seq2SeqBatch(src, tgt_in, tgt_out, rows)

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        while True:
            batches = self._batches(self.epoch)
            while self.position < len(batches):
                idx = batches[self.position]
                self.position += 1
                yield self.collate(idx)
            self.epoch += 1
            self.position = 0

    def _identity(self) -> dict[str, int]:
        """What must match for a saved position to mean the same batches after a restart."""
        checksum = zlib.crc32(",".join(map(str, self.lengths)).encode("ascii"))
        identity = {"seed": self.seed, "max_tokens": self.max_tokens}
        if self.pad_to:  # only when set: runs saved before the option existed still resume
            identity["pad_to"] = self.pad_to  # checked before the lengths it rounds
        return {**identity, "num_examples": len(self.lengths), "lengths_crc32": checksum}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where `state` was taken; refuse if data or settings changed since."""
        if state.get("pad_to", 0) != self.pad_to:
            raise CheckpointError(
                f"cannot resume the batch stream: saved data.pad_to={state.get('pad_to', 0)} "
                f"but this run has {self.pad_to}; resume with the same data.pad_to")
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise CheckpointError(
                    f"cannot resume the batch stream: saved {key}={state.get(key)} but this run "
                    f"has {value}; resume with the same data, seed and max_tokens"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
