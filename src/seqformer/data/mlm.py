"""Masked-language-model data: ``[CLS] A [SEP] B [SEP]`` examples and the masking collator.

Examples are built once from documents (a fortune, a Bible chapter), each a list of segments
(sentences, verses): consecutive segments are packed up to ``max_len`` tokens and cut at a
segment boundary into A and B, so the model sees a sentence pair with segment ids as in BERT
(without the next-sentence objective, which RoBERTa showed is not needed).

Masking happens at batch time (:func:`mask_tokens`), not once in preprocessing: batch ``n`` is
a pure function of ``(seed, n)``, so every epoch draws a fresh mask (RoBERTa's dynamic
masking) and the stream resumes exactly from one integer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from seqformer.data.tokenizer import Tokenizer
from seqformer.errors import ConfigError, DataError
from seqformer.models.bert import CLS_ID, IGNORE, MASK_ID, PAD_ID, SEP_ID, EncoderBatch

Example = tuple[list[int], list[int]]  # (input ids, token type ids)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Rough sentence split (after . ! ? before a capital): enough to give A/B boundaries."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))) if s]


def pair_example(a: Sequence[int], b: Sequence[int] = ()) -> Example:
    """``[CLS] a [SEP]`` (+ ``b [SEP]``) and its token types (0 for A, 1 for B)."""
    ids = [CLS_ID, *a, SEP_ID]
    types = [0] * len(ids)
    if b:
        ids += [*b, SEP_ID]
        types += [1] * (len(b) + 1)
    return ids, types


def build_pair_examples(documents: Sequence[Sequence[Sequence[int]]], max_len: int,
                        seed: int) -> list[Example]:
    """Pack consecutive segments of each document into ``[CLS] A [SEP] B [SEP]`` examples of at
    most ``max_len`` tokens. The A/B cut is a random segment boundary (seeded); a chunk of one
    segment is cut in its middle, and a segment longer than the budget is split into pieces."""
    if max_len < 8:
        raise ConfigError(f"model.max_len={max_len} is too short for sentence pairs; use >= 8")
    budget = max_len - 3
    rng = random.Random(f"seqformer.mlm.pairs:{seed}")
    examples: list[Example] = []
    for doc in documents:
        pieces = [list(seg[i:i + budget]) for seg in doc if seg
                  for i in range(0, len(seg), budget)]
        chunk: list[list[int]] = []
        size = 0
        for seg in [*pieces, None]:
            if seg is not None and size + len(seg) <= budget:
                chunk.append(seg)
                size += len(seg)
                continue
            if chunk:
                examples.append(_cut(chunk, rng))
            chunk, size = ([seg], len(seg)) if seg is not None else ([], 0)
    return examples


def _cut(chunk: list[list[int]], rng: random.Random) -> Example:
    if len(chunk) == 1:
        seg = chunk[0]
        if len(seg) < 2:
            return pair_example(seg)
        half = len(seg) // 2
        return pair_example(seg[:half], seg[half:])
    k = rng.randint(1, len(chunk) - 1)
    return pair_example([t for s in chunk[:k] for t in s], [t for s in chunk[k:] for t in s])


def collate(examples: Sequence[Example]) -> tuple[Tensor, Tensor]:
    """Pad to the longest example: (input_ids, token_type_ids), both (batch, time)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    types = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, t) in enumerate(examples):
        ids[row, :len(x)] = torch.tensor(x)
        types[row, :len(t)] = torch.tensor(t)
    return ids, types


def mask_tokens(input_ids: Tensor, vocab_size: int, generator: torch.Generator,
                probability: float = 0.15, n_special: int = MASK_ID + 1,
                mask_id: int = MASK_ID) -> tuple[Tensor, Tensor]:
    """BERT's masking: select each non-special token with ``probability``; of the selected,
    80% become [MASK], 10% a random non-special token, 10% stay. Returns (inputs, labels) with
    labels = the original id at selected positions and IGNORE (-100) everywhere else.

    Specials (ids < ``n_special``: pad, [CLS], [SEP], unk, [MASK]) are never selected: the
    model could not learn anything useful from predicting them, and padding must stay padding.
    """
    if not 0.0 < probability < 1.0:
        raise ConfigError(f"data.mask_probability must be in (0, 1), got {probability}")
    candidates = input_ids >= n_special
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = candidates & (draw < probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    how = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(n_special, vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (how < 0.8)] = mask_id
    swap = selected & (how >= 0.8) & (how < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


class PositionStream:
    """Endless batches in which batch ``n`` is a pure function of ``(seed, n)`` -- subclasses
    say how (:meth:`batch_at`) and how many batches make an epoch (``per_epoch``) -- so
    ``state_dict`` is the number of batches yielded: the Trainer's stream contract, and
    ``--resume`` continues with exactly the batches an uninterrupted run would have seen."""

    per_epoch: int = 1
    position: int = 0

    @property
    def epoch(self) -> int:
        return self.position // self.per_epoch

    def batch_at(self, position: int) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        while True:
            batch = self.batch_at(self.position)
            self.position += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class ExampleStream(PositionStream):
    """Endless batches of a fixed example list: each epoch a seeded permutation, cut into
    ``batch_size`` slices; subclasses decide how a slice becomes a batch (:meth:`make_batch`)."""

    def __init__(self, examples: Sequence[Any], batch_size: int, seed: int) -> None:
        if not examples:
            raise DataError("no training examples; check the recipe's data section")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.examples, self.batch_size, self.seed = list(examples), batch_size, seed
        self.per_epoch = max(1, -(-len(self.examples) // batch_size))
        self.position = 0
        self._order: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            order = list(range(len(self.examples)))
            random.Random(f"seqformer.examples:{self.seed}:{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def batch_at(self, position: int) -> Any:
        epoch, index = divmod(position, self.per_epoch)
        order = self._permutation(epoch)
        chosen = [self.examples[i]
                  for i in order[index * self.batch_size:(index + 1) * self.batch_size]]
        return self.make_batch(chosen, position)

    def make_batch(self, examples: list[Any], position: int) -> Any:
        raise NotImplementedError


class MLMStream(ExampleStream):
    """Pair examples, padded, with a fresh BERT mask per batch (so per epoch)."""

    def __init__(self, examples: Sequence[Example], batch_size: int, vocab_size: int,
                 seed: int, probability: float = 0.15) -> None:
        super().__init__(examples, batch_size, seed)
        self.vocab_size, self.probability = vocab_size, probability

    def make_batch(self, examples: list[Example], position: int) -> EncoderBatch:
        ids, types = collate(examples)
        generator = torch.Generator().manual_seed(hash_seed(self.seed, position))
        inputs, labels = mask_tokens(ids, self.vocab_size, generator, self.probability)
        return EncoderBatch(inputs, types, labels)


def hash_seed(seed: int, position: int) -> int:
    """A 63-bit seed for batch ``position`` (stable across runs, unlike ``hash``)."""
    return random.Random(f"seqformer.mlm.mask:{seed}:{position}").getrandbits(63)


def fixed_masked_batches(examples: Sequence[Example], batch_size: int, vocab_size: int,
                         seed: int, probability: float = 0.15) -> list[EncoderBatch]:
    """Validation batches with one fixed mask, so validation losses are comparable over time."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(examples), batch_size):
        ids, types = collate(examples[i:i + batch_size])
        inputs, labels = mask_tokens(ids, vocab_size, generator, probability)
        out.append(EncoderBatch(inputs, types, labels))
    return out


def tokenize_documents(tokenizer: Tokenizer, documents: Sequence[Sequence[str]]
                       ) -> list[list[list[int]]]:
    return [[tokenizer.encode(seg) for seg in doc] for doc in documents]
