"""Synthetic long-range tasks: copy or reverse a random sequence of a given length.

Nothing about them is linguistic; what they measure is how far information must travel. To
reverse L tokens the first output needs the *last* input, so a model that squeezes the source
into one vector must hold all L tokens in it, while attention can look each one up. Sweeping L
(10, 25, 50, 100, 200) shows where each architecture breaks.

Tokens are lowercase letters joined by spaces (``"c a f"``), to be read with the ``word``
tokenizer on both sides. Every example is a pure function of ``(task, length, seed, index)``,
so the same settings give the same data on any machine, in any order of generation.
"""

from __future__ import annotations

import random
import string

from seqformer.data.corpus import Pair
from seqformer.errors import ConfigError

SYNTHETIC_TASKS = ("copy", "reverse")


def synthetic_pairs(task: str, length: int, n: int, seed: int, symbols: int = 10,
                    offset: int = 0) -> list[Pair]:
    """``n`` pairs of exactly ``length`` tokens drawn from the first ``symbols`` letters.

    ``offset`` starts at example ``offset`` of the same stream, so train/valid/test splits are
    disjoint slices of one sequence: ``synthetic_pairs(..., n=200, offset=train_size)``.
    """
    if task not in SYNTHETIC_TASKS:
        raise ConfigError(f"synthetic.task={task!r}; use one of {', '.join(SYNTHETIC_TASKS)}")
    if length < 1:
        raise ConfigError(f"synthetic length must be >= 1, got {length}")
    if not 2 <= symbols <= 26:
        raise ConfigError(f"synthetic.symbols must be in 2..26, got {symbols}")
    alphabet = string.ascii_lowercase[:symbols]
    pairs = []
    for i in range(offset, offset + n):
        # A string seed is hashed with SHA-512 by `random`: stable across runs and platforms.
        rng = random.Random(f"seqformer.synthetic:{seed}:{length}:{i}")
        tokens = [rng.choice(alphabet) for _ in range(length)]
        target = tokens if task == "copy" else tokens[::-1]
        pairs.append(Pair(" ".join(tokens), " ".join(target), where=f"{task}-{length}:{i}"))
    return pairs


def synthetic_splits(task: str, length: int, sizes: tuple[int, int, int], seed: int,
                     symbols: int = 10) -> dict[str, list[Pair]]:
    """Disjoint train/valid/test slices of one example stream.

    With few symbols and short lengths the same sequence can recur; a test source seen in
    training is dropped, so test scores never reward memorisation.
    """
    train_n, valid_n, test_n = sizes
    train = synthetic_pairs(task, length, train_n, seed, symbols)
    seen = {p.source for p in train}
    valid = synthetic_pairs(task, length, valid_n, seed, symbols, offset=train_n)
    test = synthetic_pairs(task, length, test_n, seed, symbols, offset=train_n + valid_n)
    return {"train": train, "valid": [p for p in valid if p.source not in seen],
            "test": [p for p in test if p.source not in seen]}
