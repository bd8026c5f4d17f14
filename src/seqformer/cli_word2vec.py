"""``seqformer word2vec [FILES...] [--corpus fortunes|bible] --out vectors.txt``: skip-gram
word vectors (:mod:`seqformer.models.word2vec`) in word2vec's text format.

The vectors file is what a CNN or recurrent classifier's ``model.embeddings`` reads (Kim's
CNN-static / non-static), keyed by :func:`~seqformer.models.word2vec.word_tokens`. The
``fortunes`` corpus leaves out the fortunes of the classifier's validation and test splits, so
a classifier scored on them never had its test texts in its vectors.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import DataError, UserError
from seqformer.models.word2vec import CORPORA, corpus_texts

NEIGHBOURS = 8


def read_lines(paths: list[str]) -> list[str]:
    """The non-empty lines of plain UTF-8 text files, one text each."""
    texts = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: {'a directory' if path.is_dir() else 'no such file'}; "
                            "give plain text files, one text per line")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        texts += [line for line in text.splitlines() if line.strip()]
    return texts


def cmd_word2vec(args: argparse.Namespace) -> int:
    from seqformer.models.word2vec import train_word2vec

    if args.files and args.corpus:
        raise UserError("word2vec: give text files or --corpus, not both")
    if not args.files and not args.corpus:
        raise UserError(f"word2vec: give text files (one text per line) or --corpus "
                        f"{'|'.join(CORPORA)}")
    texts = read_lines(args.files) if args.files else corpus_texts(args.corpus)
    if not texts:
        raise DataError(f"word2vec: no text in {' '.join(args.files)}")
    vectors = train_word2vec(texts, dim=args.dim, window=args.window, negative=args.negative,
                             min_count=args.min_count, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             progress=not args.no_progress, sample=args.sample)
    vectors.save(args.out)
    s = vectors.stats
    print(f"vocabulary: {len(vectors)} words seen >= {args.min_count} times "
          f"({s['vocab_tokens']} of {s['tokens']} tokens in {s['texts']} texts)")
    print(f"trained: {s['pairs']} pairs in {s['epochs']} epochs, {s['seconds']:.1f} s "
          f"({s['pairs'] / max(s['seconds'], 1e-9):.0f} pairs/s), last epoch's loss "
          f"{s['loss']:.3f}")
    print(f"{len(vectors)} x {vectors.dim} vectors written to {args.out}")
    for word in args.neighbours or []:
        key = word.lower()
        if key not in vectors:
            print(f"{word}: not in the vocabulary")
            continue
        near = vectors.most_similar(key, NEIGHBOURS)
        print(f"{key}: " + ", ".join(f"{w} {c:.3f}" for w, c in near))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``word2vec``."""
    p = sub.add_parser("word2vec", help="train skip-gram word vectors (word2vec text format)")
    p.add_argument("files", nargs="*", help="plain text files, one text per line")
    p.add_argument("--corpus", choices=CORPORA, help="a built-in corpus instead of files: "
                   "fortunes (outside the classifier's valid/test splits) or bible (KJV verses)")
    p.add_argument("--out", required=True, help="vectors file to write (word2vec text format)")
    p.add_argument("--dim", type=int, default=100, help="vector size (default 100)")
    p.add_argument("--window", type=int, default=5, help="largest distance between a word "
                   "and its context; each word draws its own from 1..WINDOW (default 5)")
    p.add_argument("--negative", type=int, default=5, help="negative samples per pair "
                   "(default 5)")
    p.add_argument("--min-count", type=int, default=5, help="drop words seen fewer times "
                   "(default 5)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the text (default 5)")
    p.add_argument("--sample", type=float, default=1e-4, help="subsampling threshold t of "
                   "frequent words; 0 keeps every occurrence (default 1e-4)")
    p.add_argument("--lr", type=float, default=0.1, help="initial SGD rate, decayed "
                   "linearly to zero (default 0.1, for corpora of 10^5-10^7 tokens; the C "
                   "tool's 0.025 suits much larger ones)")
    p.add_argument("--batch-size", type=int, default=1024, help="pairs per update (default "
                   "1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed and text "
                   "give the same vectors (default 0)")
    p.add_argument("--neighbours", nargs="+", action="extend", metavar="WORD",
                   help=f"print the {NEIGHBOURS} nearest words (cosine) of each WORD")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_word2vec)
