"""Word2Vec (Mikolov et al., 2013): skip-gram with negative sampling, and word2vec's text format.

Each word gets an input vector ``v`` and an output vector ``u``; for a word ``c`` and a word
``o`` seen near it, training lowers ``-log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)``,
where the ``k`` "negatives" are drawn from the unigram distribution raised to 0.75. The input
vectors are the word vectors. The details follow the original C tool, because they matter as
much as the objective (Levy et al., 2015):

- vocabulary: words seen ``min_count`` times, most frequent first, ties by spelling; rarer
  words are removed from the text *before* windows are taken, so windows reach further;
- subsampling: every epoch each occurrence of a word of frequency ``f`` is kept with
  probability ``min(1, sqrt(t/f) + t/f)`` (``t = sample = 1e-4``), which thins "the", "of"
  and makes the remaining pairs more informative;
- dynamic window: each centre draws its window uniformly from ``1..window``, so near
  neighbours count more; windows never cross a text (a line of the corpus);
- a negative equal to the true context word is skipped, as the C tool does.

Why plain SGD with a linearly decaying rate (the C tool's schedule) and not ``SparseAdam``: the
gradient of this loss is closed-form, so :meth:`SkipGram.sgd_step` applies it with two
``index_add_`` calls and no autograd graph, sparse gradient or optimiser state. On one CPU core
that is 5x the pairs per second of autograd + ``SparseAdam`` (about 850k against 170k), for
vectors as good on the fortunes. Updates of a batch are summed, as the C tool's threads sum
theirs; pairs are shuffled so a batch's updates of one row come from unrelated contexts. The
batch size changes nothing measurable (16 to 4096 pairs give the same loss); 1024 is the
fastest.

Why the rate starts at 0.1, not the C tool's 0.025: that value was tuned on corpora of 10^8-10^9
tokens. On the fortunes (3 x 10^5) five epochs at 0.025 leave every vector pointing the same way
(two random words have cosine 0.99; neighbours are noise), the well-known small-corpus
symptom; at 0.1 that cosine is 0.37 and neighbours are topical (``law``: thermodynamics,
finagle's, murphy's). Above about 0.2 SGD diverges (0.3 does at 1024 pairs a batch, 0.4
even at 64). On a large corpus, pass the C tool's 0.025.

Pairs are built with numpy per chunk of about a million tokens (a Python loop per *offset*,
not per pair or sentence), so memory stays bounded on large corpora. Every random draw
(initialisation, subsampling, windows, shuffles, negatives) comes from generators seeded by
``seed``: the same seed and text give identical vectors on the CPU.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqformer.errors import DataError, UserError
from seqformer.training.checkpoint import atomic_write

WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
CHUNK_TOKENS = 1 << 20  # tokens whose pairs are built and shuffled together (<= 50 MB of them)
# A row's summed update in one batch counts at most this many pairs (see SkipGram.sgd_step).
MAX_REPEATS = 8
MIN_LR_FRACTION = 1e-4  # the C tool's floor: the rate never reaches exactly zero


CORPORA = ("fortunes", "bible")


def corpus_texts(name: str) -> list[str]:
    """A built-in corpus: the fortunes outside the classifier's held-out splits, or the KJV
    one verse per text (needs Debian's ``sword-text-kjv``)."""
    if name not in CORPORA:
        raise DataError(f"no built-in corpus {name!r}; use one of {', '.join(CORPORA)}")
    if name == "fortunes":
        from seqformer.data.fortunes import fortune_texts

        return fortune_texts()
    from seqformer.data.bible import plain_text

    return plain_text("engKJV2006eb").splitlines()


def word_tokens(text: str) -> list[str]:
    """Lower-cased words and numbers, an apostrophe suffix kept (``"Don't stop."`` ->
    ``["don't", "stop"]``): the keys of the vectors file, and how a classifier that reads it
    should split its text to find them."""
    return WORD_RE.findall(text.lower())


class UnknownWord(DataError, KeyError):
    """A word the vectors do not have: a :class:`KeyError` for code that looks words up, a
    :class:`DataError` (one line, exit code 2) when it reaches the command line."""

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0])


# --------------------------------------------------------------------------------------------
# Word vectors and their file format
# --------------------------------------------------------------------------------------------


class WordVectors:
    """Words and their vectors (row ``i`` of ``vectors`` belongs to ``words[i]``).

    ``stats`` holds what training measured (tokens, pairs, seconds, loss); it is not saved.
    """

    def __init__(self, words: list[str], vectors: np.ndarray | Tensor,
                 stats: dict[str, Any] | None = None) -> None:
        if isinstance(vectors, Tensor):
            vectors = vectors.detach().cpu().numpy()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"{len(words)} words but vectors of shape {vectors.shape}")
        self.words = list(words)
        self.vectors = vectors
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("words must be unique")
        self.stats = dict(stats or {})
        self._unit: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._row(word)]

    def _row(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise UnknownWord(f"{word!r} is not in the vocabulary ({len(self)} words)") from None

    def most_similar(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words of highest cosine similarity to ``word`` (itself excluded), best
        first; ties in the order of the vocabulary."""
        row = self._row(word)
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norms, 1e-12)
        cosines = self._unit @ self._unit[row]
        cosines[row] = -np.inf
        order = np.argsort(-cosines, kind="stable")[: min(k, len(self) - 1)]
        return [(self.words[i], float(cosines[i])) for i in order]

    def save(self, path: str | Path) -> None:
        """word2vec's text format: ``N DIM``, then ``word v1 ... vDIM`` (``%.6f``) per line.

        Written to a temporary file renamed into place, so a reader (or a crash) never sees
        half a file.
        """
        fmt = " ".join(["%.6f"] * self.dim)

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(f"{len(self)} {self.dim}\n")
                for word, row in zip(self.words, self.vectors):
                    f.write(f"{word} {fmt % tuple(row)}\n")

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> WordVectors:
        """Read word2vec's text format, as written by :meth:`save`, gensim
        (``save_word2vec_format(binary=False)``) or the C tool (``-binary 0``, whose lines end
        in a space). A file without the ``N DIM`` header (GloVe's) is read too. Errors name
        the file and line."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text (a binary .bin vectors file? save it "
                            "as text: gensim's save_word2vec_format(binary=False))") from None
        first = lines[0].split() if lines else []
        header = len(first) == 2 and all(x.isdigit() for x in first)
        if not lines or (not header and len(first) < 2):
            raise DataError(f"{path}:1: expected a header 'WORDS DIM' then 'word v1 ... vDIM' "
                            "lines")
        count, dim = (int(first[0]), int(first[1])) if header else (None, len(first) - 1)
        start = 1 if header else 0
        words: list[str] = []
        rows: list[np.ndarray] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(lines[start:], start=start + 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != dim + 1:
                raise DataError(f"{path}:{number}: expected a word and {dim} values, got "
                                f"{len(parts) - 1} values")
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError:
                raise DataError(f"{path}:{number}: a value of {parts[0]!r} is not a "
                                "number") from None
            if parts[0] in seen:
                raise DataError(f"{path}:{number}: {parts[0]!r} again (first on line "
                                f"{seen[parts[0]]})")
            seen[parts[0]] = number
            words.append(parts[0])
        if count is not None and count != len(words):
            raise DataError(f"{path}:1: the header says {count} words, the file has "
                            f"{len(words)}")
        if not words or dim == 0:
            raise DataError(f"{path}: no vectors")
        return cls(words, np.stack(rows))


# --------------------------------------------------------------------------------------------
# Vocabulary and training pairs
# --------------------------------------------------------------------------------------------


class Corpus:
    """The training text as word ids: ``ids`` (every kept occurrence, texts concatenated),
    ``starts`` (where each text begins in ``ids``, plus its end), the vocabulary most frequent
    first and each word's count."""

    def __init__(self, texts: Iterable[str], min_count: int) -> None:
        provisional: dict[str, int] = {}
        flat: list[int] = []
        lengths: list[int] = []
        for text in texts:
            tokens = word_tokens(text)
            flat.extend(provisional.setdefault(t, len(provisional)) for t in tokens)
            lengths.append(len(tokens))
        seen = np.asarray(flat, dtype=np.int64)
        counts = np.bincount(seen, minlength=len(provisional))
        spelled = list(provisional)
        kept = sorted((i for i in range(len(spelled)) if counts[i] >= min_count),
                      key=lambda i: (-counts[i], spelled[i]))
        self.words = [spelled[i] for i in kept]
        self.counts = counts[kept]
        self.texts = len(lengths)
        self.tokens_read = len(seen)
        new_id = np.full(len(spelled), -1, dtype=np.int64)
        new_id[kept] = np.arange(len(kept))
        mapped = new_id[seen]
        keep = mapped >= 0
        text_of = np.repeat(np.arange(len(lengths)), lengths)
        self.ids = mapped[keep].astype(np.int32)  # pairs of int32 ids: half the memory
        # Rare words are dropped before windowing, as in the C tool; texts keep their bounds.
        per_text = np.bincount(text_of[keep], minlength=len(lengths))
        self.starts = np.concatenate([[0], np.cumsum(per_text)]).astype(np.int64)

    def keep_probability(self, sample: float) -> np.ndarray:
        """Mikolov's subsampling: ``min(1, sqrt(t/f) + t/f)`` per word (1 when ``t = 0``)."""
        if sample <= 0:
            return np.ones(len(self.words))
        ratio = sample / (self.counts / self.counts.sum())
        return np.minimum(1.0, np.sqrt(ratio) + ratio)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """``(first, end)`` token ranges of about :data:`CHUNK_TOKENS`, cut between texts."""
        first, n = 0, len(self.ids)
        while first < n:
            j = int(np.searchsorted(self.starts, first + CHUNK_TOKENS, side="left"))
            end = int(self.starts[min(j, len(self.starts) - 1)])  # > first: texts are whole
            yield first, end
            first = end


def skipgram_pairs(ids: np.ndarray, text_of: np.ndarray, window: int, keep: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """``(centre, context)`` rows of one epoch over ``ids``, shuffled: occurrences are
    subsampled (kept with probability ``keep[word]``), then every centre draws a window from
    ``1..window`` and pairs with the words that near it within its own text."""
    kept = rng.random(len(ids)) < keep[ids]
    ids, text_of = ids[kept], text_of[kept]
    reach = rng.integers(1, window + 1, size=len(ids))
    centres, contexts = [], []
    for d in range(1, window + 1):
        same = text_of[d:] == text_of[:-d]  # positions i, i + d of one text
        right = same & (reach[:-d] >= d)  # centre i sees i + d
        left = same & (reach[d:] >= d)  # centre i + d sees i
        centres += [ids[:-d][right], ids[d:][left]]
        contexts += [ids[d:][right], ids[:-d][left]]
    pairs = np.stack([np.concatenate(centres), np.concatenate(contexts)], axis=1)
    return pairs[rng.permutation(len(pairs))]


def unigram_table(counts: np.ndarray) -> np.ndarray:
    """The C tool's noise table: word ids, each filling a share of the table proportional to
    ``count ** 0.75``, so a negative is one uniform integer draw and a lookup (7x faster than a
    binary search of the distribution). Sized so the rarest word holds about 10 slots (at
    least 2^20 and at most 2^24 entries)."""
    p = counts.astype(np.float64) ** 0.75
    p /= p.sum()
    size = int(min(1 << 24, max(1 << 20, 10 / p.min())))
    slots = np.searchsorted(np.cumsum(p), (np.arange(size) + 0.5) / size, side="right")
    return np.minimum(slots, len(p) - 1).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class SkipGram(nn.Module):
    """The two tables: ``in_vectors`` (the word vectors, U(-0.5/dim, 0.5/dim) as in the C
    tool) and ``out_vectors`` (zeros, so the first updates only move input vectors)."""

    def __init__(self, vocab_size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        # Given tables: nn.Embedding's own N(0, 1) init would draw from the global generator.
        self.in_vectors = nn.Embedding(vocab_size, dim, _weight=torch.empty(vocab_size, dim))
        self.out_vectors = nn.Embedding(vocab_size, dim, _weight=torch.zeros(vocab_size, dim))
        with torch.no_grad():
            self.in_vectors.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=generator)

    def forward(self, centres: Tensor, contexts: Tensor, negatives: Tensor) -> Tensor:
        """Loss per pair: ``-log sigma(u_o.v_c) - sum_k log sigma(-u_k.v_c)``, where a
        negative equal to the pair's context adds nothing. (B,), (B,), (B, K) -> (B,)."""
        v = self.in_vectors(centres)
        u = self.out_vectors(torch.cat([contexts[:, None], negatives], dim=1))
        scores = torch.einsum("bd,bkd->bk", v, u)
        signs, mask = _signs_and_mask(contexts, negatives)
        return -(nn.functional.logsigmoid(signs * scores) * mask).sum(dim=1)

    @torch.no_grad()
    def sgd_step(self, centres: Tensor, contexts: Tensor, negatives: Tensor, lr: float,
                 max_repeats: int | None = MAX_REPEATS) -> float:
        """One SGD step on the summed loss of a batch of pairs, its gradient in closed form
        (``d/ds -log sigma(y s) = -y sigma(-y s)``); returns the mean loss before the step.

        A row that occurs ``n > max_repeats`` times in the batch gets its summed update scaled
        by ``max_repeats / n``. The C tool applies those updates one at a time, each seeing the
        last, so they saturate; summed, they overshoot: with a vocabulary small next to the
        batch (24 words, 1024 pairs) a row occurs hundreds of times and SGD at 0.1 diverges to
        NaN. On real text the cap touches the output vectors of the most frequent words only
        (on the fortunes 0.1% of centres, 23% of context/negative slots), with vectors as good.
        """
        v_table, u_table = self.in_vectors.weight, self.out_vectors.weight
        targets = torch.cat([contexts[:, None], negatives], dim=1)
        # index_select and a multiply-sum: on the CPU 4-5x faster than advanced indexing and
        # bmm for these many tiny rows.
        v = v_table.index_select(0, centres)
        u = u_table.index_select(0, targets.reshape(-1)).view(*targets.shape, -1)
        scores = (u * v[:, None, :]).sum(2)
        signs, mask = _signs_and_mask(contexts, negatives)
        signed = signs * scores
        loss = -(nn.functional.logsigmoid(signed) * mask).sum() / len(centres)
        step = torch.sigmoid(-signed).mul_(signs).mul_(mask).mul_(lr)  # -lr * dLoss/dscore
        flat = targets.reshape(-1)
        grad_v = torch.bmm(step[:, None, :], u).squeeze(1)
        grad_u = (step[:, :, None] * v[:, None, :]).reshape(-1, v.shape[1])
        if max_repeats is not None:
            grad_v *= _repeat_scale(centres, len(v_table), max_repeats)[:, None]
            grad_u *= _repeat_scale(flat, len(u_table), max_repeats)[:, None]
        v_table.index_add_(0, centres, grad_v)
        u_table.index_add_(0, flat, grad_u)
        return float(loss)


def _repeat_scale(rows: Tensor, n_rows: int, max_repeats: int) -> Tensor:
    """Per entry of ``rows``: ``min(1, max_repeats / occurrences of its row in rows)``."""
    repeats = torch.bincount(rows, minlength=n_rows)[rows]
    return (max_repeats / repeats).clamp_(max=1.0)


def _signs_and_mask(contexts: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """+1 for the context column, -1 for the negatives; a mask that drops negatives equal to
    the context (the C tool skips them)."""
    signs = torch.full((1, negatives.shape[1] + 1), -1.0)
    signs[0, 0] = 1.0
    mask = torch.cat([torch.ones_like(contexts[:, None], dtype=torch.float32),
                      (negatives != contexts[:, None]).float()], dim=1)
    return signs, mask


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _check(name: str, value: float, low: float) -> None:
    if not value >= low:
        raise UserError(f"word2vec: {name} must be >= {low:g}, got {value}")


def train_word2vec(texts: Iterable[str], dim: int = 100, window: int = 5, negative: int = 5,
                   min_count: int = 5, epochs: int = 5, batch_size: int = 1024,
                   lr: float = 0.1, seed: int = 0, progress: bool = True,
                   sample: float = 1e-4) -> WordVectors:
    """Skip-gram vectors of the words in ``texts`` (one text = one window boundary: a line,
    a fortune, a verse), split by :func:`word_tokens`.

    ``lr`` decays linearly to ``lr * 1e-4`` over all epochs, by the share of tokens done. The
    returned vectors' ``stats`` say what was trained on: ``texts``, ``tokens`` (all words read),
    ``vocab_tokens`` (those in the vocabulary), ``pairs`` (over all epochs), ``seconds``,
    ``loss`` (mean over the last epoch).
    """
    for name, value, low in (("dim", dim, 1), ("window", window, 1), ("negative", negative, 1),
                             ("min_count", min_count, 1), ("epochs", epochs, 1),
                             ("batch_size", batch_size, 1), ("sample", sample, 0)):
        _check(name, value, low)
    if not lr > 0:
        raise UserError(f"word2vec: lr must be positive, got {lr}")
    from tqdm import tqdm

    start = time.perf_counter()
    corpus = Corpus(texts, min_count)
    if len(corpus.words) < 2:
        raise DataError(f"word2vec: {len(corpus.words)} word(s) occur at least {min_count} "
                        f"times in {corpus.tokens_read} tokens; lower min_count or give more "
                        "text")
    rng = np.random.default_rng(seed)
    model = SkipGram(len(corpus.words), dim, torch.Generator().manual_seed(seed))
    keep = corpus.keep_probability(sample)
    noise = unigram_table(corpus.counts)
    text_of = np.repeat(np.arange(len(corpus.starts) - 1), np.diff(corpus.starts))
    n_tokens = len(corpus.ids)
    total_pairs = 0
    bar = tqdm(total=None, unit="pair", unit_scale=True, file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.2 if sys.stderr.isatty() else 30.0,
               desc="word2vec")
    try:
        for epoch in range(epochs):
            epoch_loss, epoch_pairs = 0.0, 0
            for first, end in corpus.chunks():
                pairs = skipgram_pairs(corpus.ids[first:end], text_of[first:end], window,
                                       keep, rng)
                n_batches = max(1, math.ceil(len(pairs) / batch_size))
                for b in range(n_batches):
                    batch = torch.from_numpy(pairs[b * batch_size:(b + 1) * batch_size]).long()
                    if len(batch) == 0:
                        break
                    draws = rng.integers(0, len(noise), (len(batch), negative))
                    negatives = torch.from_numpy(noise[draws]).long()
                    done = (epoch * n_tokens + first + (end - first) * b / n_batches)
                    rate = lr * max(MIN_LR_FRACTION, 1.0 - done / (epochs * n_tokens))
                    loss = model.sgd_step(batch[:, 0], batch[:, 1], negatives, rate)
                    epoch_loss += loss * len(batch)
                    epoch_pairs += len(batch)
                    bar.update(len(batch))
                    if bar.n and b % 50 == 0:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", lr=f"{rate:.4f}")
                # An estimate of all the pairs to come, for the bar's ETA: the pairs per token
                # of what has been seen, over every epoch.
                total_pairs += len(pairs)
                done_tokens = epoch * n_tokens + end
                bar.total = round(total_pairs * epochs * n_tokens / max(1, done_tokens))
                bar.refresh()
    finally:
        bar.close()
    stats = {"texts": corpus.texts, "tokens": corpus.tokens_read, "vocab_tokens": n_tokens,
             "pairs": total_pairs, "seconds": time.perf_counter() - start,
             "loss": epoch_loss / max(1, epoch_pairs), "epochs": epochs}
    return WordVectors(corpus.words, model.in_vectors.weight.detach().clone(), stats)
