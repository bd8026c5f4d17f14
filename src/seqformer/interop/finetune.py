"""Fine-tuning an imported encoder-decoder with ``seqformer train`` (recipe ``init_from``).

``init_from: hf:PATH`` starts from a local Hugging Face Marian directory (safetensors);
``init_from: PATH`` from a seqformer model directory, e.g. one written by ``seqformer import``
(which is how a pickled checkpoint is admitted, with ``--trust-pickle``). The architecture and
the tokenizers come from the checkpoint; the recipe's ``model`` section may only change the
training-time fields below.

Batching (``data/batching.py``) pads with 0 and adds bos 1 / eos 2, seqformer's fixed ids. An
imported vocabulary has its own (Marian: eos 0, pad and decoder start last), and 0 is a real
token there, so :func:`with_model_ids` rewrites the special positions of each batch by the
examples' lengths (never by value), and :class:`ModelIdStream` does it for the training stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqformer.data.batching import Seq2SeqBatch
from seqformer.data.tokenizer import Tokenizer
from seqformer.errors import ConfigError
from seqformer.models.seq2seq import Seq2Seq

TRAINING_FIELDS = ("dropout", "attention_dropout", "label_smoothing")


@dataclass
class Init:
    """The model to fine-tune and the tokenizers it was trained with."""

    model: Seq2Seq
    source: Tokenizer
    target: Tokenizer


def load_init(spec: str, overrides: dict[str, Any], where: str = "init_from") -> Init:
    """Model and tokenizers named by ``spec`` (``hf:PATH`` or a seqformer model directory),
    with the recipe's training-time ``overrides`` (dropout, label smoothing) applied."""
    from seqformer.data.tokenizer import load_tokenizer
    from seqformer.interop import hf_marian

    _check_overrides(overrides, TRAINING_FIELDS, where)
    if spec.startswith("hf:"):
        path = Path(spec[3:]).expanduser()
        model = hf_marian.load(path)
        tokenizers = hf_marian.load_tokenizers(path, model.config)
        if tokenizers is None:
            raise ConfigError(f"{where}: {path} has no source.spm/target.spm/vocab.json; "
                              "fine-tuning needs the tokenizer files")
        source, target = tokenizers
    else:
        path = Path(spec).expanduser()
        model = Seq2Seq.load(path)
        source = load_tokenizer(path / "tokenizer" / "source")
        target = load_tokenizer(path / "tokenizer" / "target")
    return Init(_with_overrides(model, overrides).train(), source, target)


def _check_overrides(overrides: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    changed = sorted(k for k in overrides if k not in allowed)
    if changed:
        raise ConfigError(f"model.{changed[0]}: the architecture comes from {where}; the "
                          f"model section may only set {', '.join(allowed)}")


def _with_overrides(model: Any, overrides: dict[str, Any]) -> Any:
    """The same weights in a model whose config has the training-time ``overrides``."""
    if not overrides:
        return model
    tuned = type(model)(dataclasses.replace(model.config, **overrides))
    tuned.load_state_dict(model.state_dict())
    return tuned


def with_model_ids(batch: Seq2SeqBatch, model: Any, src_ids: Sequence[Sequence[int]],
                   tgt_ids: Sequence[Sequence[int]] | None) -> Seq2SeqBatch:
    """``batch`` (collated with seqformer's 0/1/2) with the model's pad/bos/eos at the padding,
    start and end positions of each example; unchanged for models with the default ids."""
    pad, bos, eos = (getattr(model, name, d) for name, d in
                     (("pad_id", 0), ("bos_id", 1), ("eos_id", 2)))
    if (pad, bos, eos) == (0, 1, 2):
        return batch
    # Rows with index -1 fill a fixed batch shape (BatchStream's pad_to): copies of row 0
    # whose target is all padding.
    filler = batch.index < 0
    index = batch.index.tolist()
    rows = [i if i >= 0 else index[0] for i in index]
    src_len = torch.tensor([len(src_ids[i]) for i in rows]).unsqueeze(1)
    src = batch.src.masked_fill(torch.arange(batch.src.shape[1]) >= src_len, pad)
    tgt_in = tgt_out = None
    if batch.tgt_in is not None and tgt_ids is not None:
        tgt_len = torch.tensor([len(tgt_ids[i]) for i in rows]).unsqueeze(1)
        pos = torch.arange(batch.tgt_in.shape[1])
        tgt_in = batch.tgt_in.masked_fill(pos == 0, bos).masked_fill(pos > tgt_len, pad)
        tgt_out = batch.tgt_out.masked_fill(pos == tgt_len, eos).masked_fill(pos > tgt_len, pad)
        tgt_out = tgt_out.masked_fill(filler.unsqueeze(1), pad)
    return Seq2SeqBatch(src, tgt_in, tgt_out, batch.index, pad)


class ModelIdStream:
    """A training stream whose batches carry the model's special ids; everything else
    (``state_dict`` for exact resume, epoch counters) is the wrapped stream's."""

    def __init__(self, stream: Any, model: Any, src_ids: Sequence[Sequence[int]],
                 tgt_ids: Sequence[Sequence[int]]) -> None:
        self.stream, self.model, self.src_ids, self.tgt_ids = stream, model, src_ids, tgt_ids

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        for batch in self.stream:
            yield with_model_ids(batch, self.model, self.src_ids, self.tgt_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def load_lm_init(spec: str, overrides: dict[str, Any], where: str = "init_from"):
    """A language model (GPT) and its tokenizer named by ``spec``: ``hf:PATH`` (a GPT-2
    directory) or a seqformer model directory (``seqformer import`` or a trained run), with the
    recipe's training-time ``overrides`` (dropout) applied."""
    from seqformer.data.tokenizer import load_tokenizer
    from seqformer.interop import hf_gpt2
    from seqformer.models.gpt import GPT

    _check_overrides(overrides, ("dropout", "attention_dropout"), where)
    if spec.startswith("hf:"):
        path = Path(spec[3:]).expanduser()
        model = hf_gpt2.load(path)
        tokenizer = hf_gpt2.load_tokenizer(path, model.config)
        if tokenizer is None:
            raise ConfigError(f"{where}: {path} has no tokenizer.json or vocab.json + "
                              "merges.txt; fine-tuning needs the tokenizer files")
    else:
        path = Path(spec).expanduser()
        model = GPT.load(path)
        tokenizer = load_tokenizer(path / "tokenizer")
    return _with_overrides(model, overrides).train(), tokenizer
