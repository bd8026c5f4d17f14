"""Which encoder-decoder a seq2seq recipe or run directory means: the one place that knows.

A recipe picks the family with ``model.kind`` (``transformer``, the default, or ``rnn`` /
``lstm`` / ``gru``); a run directory records it as ``family`` in ``config.json``. The task,
the recipe loader and the Transducer call these functions instead of naming a model class, so a
new family is one more entry here rather than an edit in each of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqformer.config import from_dict
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models import rnn, seq2seq
from seqformer.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig, read_model_config

SEQ2SEQ_KINDS = ("transformer", *rnn.KINDS)

SeqConfig = Seq2SeqConfig | RNNSeq2SeqConfig
SeqModel = Seq2Seq | RNNSeq2Seq


def seq2seq_config_class(kind: Any, where: str = "recipe") -> type:
    """The config dataclass of ``model.kind``; recurrent kinds keep ``kind`` as a field."""
    if kind not in SEQ2SEQ_KINDS:
        raise ConfigError(f"{where}: model.kind={kind!r}; use one of {', '.join(SEQ2SEQ_KINDS)}")
    return Seq2SeqConfig if kind == "transformer" else RNNSeq2SeqConfig


def seq2seq_config(model: dict[str, Any], src_vocab_size: int, tgt_vocab_size: int,
                   where: str = "recipe") -> SeqConfig:
    """Build the config of a recipe's ``model`` section (with the tokenizers' vocab sizes)."""
    data = {**model, "src_vocab_size": src_vocab_size, "tgt_vocab_size": tgt_vocab_size}
    cls = seq2seq_config_class(data.get("kind", "transformer"), where)
    if cls is Seq2SeqConfig:
        data.pop("kind", None)
    return from_dict(cls, data, where, "model.")


def build_seq2seq(config: SeqConfig) -> SeqModel:
    return RNNSeq2Seq(config) if isinstance(config, RNNSeq2SeqConfig) else Seq2Seq(config)


def seq2seq_config_json(config: SeqConfig) -> dict[str, Any]:
    """``config.json`` content, with the ``family`` that :func:`load_seq2seq` dispatches on."""
    if isinstance(config, RNNSeq2SeqConfig):
        return rnn.config_json(config)
    return seq2seq.config_json(config)


def load_seq2seq(directory: str | Path, map_location: str = "cpu") -> SeqModel:
    family = read_model_config(directory).get("family", "seq2seq")
    if family == "rnn":
        return RNNSeq2Seq.load(directory, map_location)
    if family == "seq2seq":
        return Seq2Seq.load(directory, map_location)
    raise CheckpointError(f"{directory}: a {family} model, not an encoder-decoder; use the "
                          "command for that family")
