"""Labelled data of the fine-tuning tasks, read from files and encoded for a BERT encoder.

Readers (errors name file and line): classification TSV (``text<TAB>label`` or
``text_a<TAB>text_b<TAB>label``), CoNLL-style tagging (``token<TAB>tag``, blank line between
sentences) and SQuAD-style QA JSON lines. Encoders turn one item into an
:class:`EncodedExample` -- ids, segment ids, label(s) and what the metrics need to map
predictions back to words or characters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seqformer.data.corpus import read_text
from seqformer.data.mlm import ExampleStream, collate, pair_example
from seqformer.errors import DataError
from seqformer.models.bert import IGNORE, EncoderBatch

FIX = "fix the file named in data.train/valid/test or --data"


@dataclass
class EncodedExample:
    ids: list[int]
    types: list[int]
    label: Any  # int (classify), list[int] per token (tag), (start, end) (qa)
    meta: dict[str, Any] = field(default_factory=dict)


# -- readers --------------------------------------------------------------------------------------
def read_classification_tsv(path: str) -> list[tuple[str, str | None, str]]:
    """(text_a, text_b or None, label) per line; every line must have the same column count."""
    rows: list[tuple[str, str | None, str]] = []
    width = None
    for n, line in enumerate(read_text(path, "classification file", FIX).splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) not in (2, 3) or not cols[-1].strip():
            raise DataError(f"{path}:{n}: expected text<TAB>label or text_a<TAB>text_b<TAB>"
                            f"label, got {len(cols)} column(s)")
        if width is not None and len(cols) != width:
            raise DataError(f"{path}:{n}: {len(cols)} columns but earlier lines have {width}; "
                            "use single texts or pairs throughout")
        width = len(cols)
        rows.append((cols[0], cols[1] if len(cols) == 3 else None, cols[-1].strip()))
    if not rows:
        raise DataError(f"{path}: no examples; {FIX}")
    return rows


def read_conll(path: str) -> list[tuple[list[str], list[str]]]:
    """Sentences as (words, tags); ``-DOCSTART-`` lines are skipped."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for n, line in enumerate([*read_text(path, "tagging file", FIX).splitlines(), ""], 1):
        if not line.strip():
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        cols = line.split()
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise DataError(f"{path}:{n}: expected 'token<TAB>tag', got {line!r}")
        tag = cols[-1]
        if tag != "O" and not tag.startswith(("B-", "I-")):
            raise DataError(f"{path}:{n}: tag {tag!r} is not BIO (O, B-X or I-X)")
        words.append(cols[0])
        tags.append(tag)
    if not sentences:
        raise DataError(f"{path}: no sentences; {FIX}")
    return sentences


def read_qa_jsonl(path: str) -> list[dict[str, Any]]:
    """Items with question, context and answers [{text, answer_start}] (character offsets)."""
    items = []
    for n, line in enumerate(read_text(path, "QA file", FIX).splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            answers = item["answers"]
            if isinstance(answers, dict):  # HF datasets layout: {"text": [..], "answer_start"}
                answers = [{"text": t, "answer_start": s}
                           for t, s in zip(answers["text"], answers["answer_start"])]
            parsed = {"question": str(item["question"]), "context": str(item["context"]),
                      "answers": [{"text": str(a["text"]), "answer_start": int(a["answer_start"])}
                                  for a in answers]}
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{n}: not a QA item ({type(exc).__name__}: {exc}); need "
                            '{"question", "context", "answers": [{"text", "answer_start"}]}'
                            ) from None
        for a in parsed["answers"]:
            start = a["answer_start"]
            if parsed["context"][start:start + len(a["text"])] != a["text"]:
                raise DataError(f"{path}:{n}: answer {a['text']!r} is not at character "
                                f"{start} of the context")
        items.append(parsed)
    if not items:
        raise DataError(f"{path}: no QA items; {FIX}")
    return items


# -- encoders -------------------------------------------------------------------------------------
def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer side until both fit (BERT's longest-first)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


def encode_classification(tokenizer, text_a: str, text_b: str | None, label: int,
                          max_len: int) -> EncodedExample:
    a = tokenizer.encode(text_a)
    b = tokenizer.encode(text_b) if text_b is not None else []
    a, b = _truncate_pair(a, b, max_len - (3 if text_b is not None else 2))
    ids, types = pair_example(a, b)
    return EncodedExample(ids, types, label)


def encode_tagging(tokenizer, words: Sequence[str], tag_ids: Sequence[int],
                   max_len: int) -> EncodedExample:
    """The first word piece of each word carries its tag; the others are IGNORE. Words cut
    off by ``max_len`` are predicted ``O`` (``meta["first"]`` has no position for them)."""
    pieces, word_of = tokenizer.encode_words(list(words))
    pieces, word_of = pieces[:max_len - 2], word_of[:max_len - 2]
    labels = [IGNORE] * (len(pieces) + 2)
    first: dict[int, int] = {}
    for i, w in enumerate(word_of):
        if w not in first:
            first[w] = i + 1
            labels[i + 1] = tag_ids[w]
    ids, types = pair_example(pieces)
    return EncodedExample(ids, types, labels, {"first": first, "n_words": len(words)})


def encode_qa(tokenizer, question: str, context: str, answers: Sequence[dict[str, Any]],
              max_len: int, max_question: int = 64) -> EncodedExample | None:
    """``[CLS] question [SEP] context [SEP]``; the label is the first answer's (start, end)
    token positions. An answer cut off by truncation gives None (training drops it) unless
    there is no answer to aim at anyway; ``meta`` keeps what maps a span back to text."""
    q = tokenizer.encode(question)[:max_question]
    ctx, offsets = tokenizer.encode_with_offsets(context)
    budget = max_len - len(q) - 3
    ctx, offsets = ctx[:budget], offsets[:budget]
    ids, types = pair_example(q, ctx)
    ctx_start = len(q) + 2
    label = (0, 0)
    found = False
    if answers:
        a_start = answers[0]["answer_start"]
        a_end = a_start + len(answers[0]["text"])
        inside = [i for i, (s, e) in enumerate(offsets) if e > a_start and s < a_end]
        if inside:
            label, found = (ctx_start + inside[0], ctx_start + inside[-1]), True
    meta = {"ctx_start": ctx_start, "offsets": offsets, "context": context,
            "answers": [a["text"] for a in answers], "found": found}
    return EncodedExample(ids, types, label, meta)


def collate_labelled(examples: Sequence[EncodedExample], kind: str) -> EncoderBatch:
    ids, types = collate([(e.ids, e.types) for e in examples])
    if kind == "tag":
        labels = torch.full(ids.shape, IGNORE, dtype=torch.long)
        for row, e in enumerate(examples):
            labels[row, :len(e.label)] = torch.tensor(e.label)
    else:
        labels = torch.tensor([e.label for e in examples], dtype=torch.long)
    return EncoderBatch(ids, types, labels)


class LabelledStream(ExampleStream):
    """Fine-tuning batches: a seeded shuffle per epoch of the encoded examples."""

    def __init__(self, examples: Sequence[EncodedExample], batch_size: int, seed: int,
                 kind: str) -> None:
        super().__init__(examples, batch_size, seed)
        self.kind = kind

    def make_batch(self, examples: list[EncodedExample], position: int) -> EncoderBatch:
        return collate_labelled(examples, self.kind)
