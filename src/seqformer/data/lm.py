"""Language-model data: one long stream of token ids, cut into blocks.

A corpus becomes ``[BOS] + ids(text)``: the BOS gives the first real token a context to be
predicted from, so every character of a text is scored (bits per character are exact) and an
empty prompt can start generation. A training example is a random contiguous window of
``block + 1`` ids; inputs are its first ``block`` ids and targets the last ``block`` (shifted by
one), so one forward pass predicts every position in parallel (teacher forcing).

Random windows rather than epochs of fixed chunks: every offset is a different example, and
the draw for step ``n`` depends only on ``(seed, n)``, so the stream resumes exactly from one int.
Evaluation instead walks non-overlapping blocks, which scores every token exactly once.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqformer.data.corpus import read_text
from seqformer.data.device import to_device
from seqformer.data.tokenizer import BOS_ID, PAD_ID, Tokenizer
from seqformer.errors import CheckpointError, ConfigError, DataError

IGNORE = -100  # unscored target positions (the cross-entropy's ignore_index)


@dataclass
class LMBatch:
    """``inputs`` (batch, time) and ``targets`` = inputs shifted left, IGNORE where unscored.

    IGNORE (-100) rather than the pad id marks unscored targets: an imported vocabulary (GPT-2)
    has no free id, its pad is its end-of-text token, which must still be scored."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(to_device(self.inputs, device), to_device(self.targets, device))

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.targets.ne(IGNORE).sum())

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


# -- text -----------------------------------------------------------------------------------------
def read_text_files(paths: Sequence[str | Path]) -> str:
    """Concatenate UTF-8 files; each file ends with a newline so files never glue together."""
    parts = []
    for path in paths:
        text = read_text(path, "text file", "the path in data.train/valid or --text")
        parts.append(text if text.endswith("\n") or not text else text + "\n")
    return "".join(parts)


def split_tail(text: str, percent: float) -> tuple[str, str]:
    """Hold out the last ``percent`` of ``text`` (cut at a line start) for validation.

    A contiguous tail, not random lines: random held-out lines sit between training lines, so
    the model would be scored on text whose neighbours it trained on.
    """
    if not 0.0 < percent < 100.0:
        raise ConfigError(f"data.valid_percent={percent} must be in (0, 100)")
    cut = int(len(text) * (1.0 - percent / 100.0))
    newline = text.rfind("\n", 0, cut)
    if newline > 0:
        cut = newline + 1
    train, valid = text[:cut], text[cut:]
    if not train.strip() or not valid.strip():
        raise DataError(f"text of {len(text)} characters is too short to hold out "
                        f"{percent}% for validation; give data.valid or more text")
    return train, valid


def encode_text(tokenizer: Tokenizer, text: str, bos_id: int = BOS_ID) -> list[int]:
    """``[bos] + ids`` of ``text``; BPE is fed line by line so huge files stay fast.
    ``bos_id``: the model's start id (GPT-2 starts from its end-of-text token)."""
    if tokenizer.kind in ("bpe", "hf"):
        ids = [bos_id]
        for line in text.splitlines(keepends=True):
            ids.extend(tokenizer.encode(line))
        return ids
    return [bos_id, *tokenizer.encode(text)]


# -- training stream ------------------------------------------------------------------------------
class BlockStream:
    """Endless random blocks of a token stream, resumable from the step count alone.

    The same contract as :class:`seqformer.data.batching.BatchStream`: ``__iter__`` yields
    batches forever, ``state_dict()`` describes the next batch, ``epoch`` counts passes over the
    data (in expectation: tokens drawn so far / tokens in the corpus).
    """

    def __init__(self, ids: Sequence[int] | Tensor, block: int, batch_size: int,
                 seed: int) -> None:
        if block < 1 or batch_size < 1:
            raise ConfigError(f"block ({block}) and data.batch_size ({batch_size}) must be >= 1")
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        if len(self.ids) < block + 1:
            raise DataError(f"training text has {len(self.ids)} tokens, fewer than one block of "
                            f"{block + 1}; give more text or lower model.max_len")
        self.block, self.batch_size, self.seed = block, batch_size, seed
        self.position = 0  # batches already yielded
        self._crc = zlib.crc32(np.asarray(self.ids, dtype=np.int32).tobytes())

    @property
    def epoch(self) -> int:
        return self.position * self.batch_size * self.block // len(self.ids)

    def batch_at(self, position: int) -> LMBatch:
        """Batch number ``position``: a pure function of (seed, position)."""
        rng = random.Random(f"seqformer.lm:{self.seed}:{position}")
        high = len(self.ids) - self.block - 1
        offsets = [rng.randint(0, high) for _ in range(self.batch_size)]
        windows = torch.stack([self.ids[o:o + self.block + 1] for o in offsets])
        return LMBatch(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())

    def __iter__(self) -> Iterator[LMBatch]:
        while True:
            batch = self.batch_at(self.position)
            self.position += 1
            yield batch

    def _identity(self) -> dict[str, int]:
        return {"seed": self.seed, "block": self.block, "batch_size": self.batch_size,
                "num_tokens": len(self.ids), "ids_crc32": self._crc}

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise CheckpointError(
                    f"cannot resume the block stream: saved {key}={state.get(key)} but this run "
                    f"has {value}; resume with the same text, tokenizer, seed and batch size")
        self.position = int(state["position"])


# -- evaluation -----------------------------------------------------------------------------------
def eval_batches(ids: Sequence[int] | Tensor, block: int, batch_size: int,
                 max_tokens: int | None = None) -> Iterator[LMBatch]:
    """Non-overlapping blocks covering ``ids``: every id after the first is a target once.

    The last block may be short; its targets are padded with IGNORE, which the loss skips, and
    its inputs with PAD_ID, which sits after every real token where the causal mask hides it.
    ``max_tokens`` caps the targets scored (a cheap validation during training), taken from
    the start of ``ids``.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    n = len(ids) - 1
    if max_tokens:
        n = min(n, max_tokens)
    if n < 1:
        raise DataError("text too short to evaluate: it needs at least one token")
    starts = list(range(0, n, block))
    for i in range(0, len(starts), batch_size):
        rows = starts[i:i + batch_size]
        inputs = torch.full((len(rows), block), PAD_ID, dtype=torch.long)
        targets = torch.full((len(rows), block), IGNORE, dtype=torch.long)
        for r, s in enumerate(rows):
            length = min(block, n - s)
            inputs[r, :length] = ids[s:s + length]
            targets[r, :length] = ids[s + 1:s + 1 + length]
        width = max(min(block, n - s) for s in rows)  # a short last batch stays short
        yield LMBatch(inputs[:, :width], targets[:, :width])
