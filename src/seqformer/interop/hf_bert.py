"""Hugging Face BERT <-> seqformer BERT: pure state-dict name mappings, both ways.

No model is built here and nothing is downloaded: the functions rename (and, for the tied MLM
decoder, duplicate or drop) tensors, so an importer or exporter can wrap them with whatever
loading it needs. Layouts match one to one because ``MultiHeadAttention`` keeps separate q/k/v
projections (HF's ``query``/``key``/``value``) and the post-LN residual blocks hold the
LayerNorms HF calls ``attention.output.LayerNorm`` and ``output.LayerNorm``.

Our side is :class:`~seqformer.models.bert.BERTModel` (``bert.*`` and ``head.*``). HF keys are
those of ``BertFor{MaskedLM,SequenceClassification,TokenClassification,QuestionAnswering}``; a
bare ``BertModel`` state dict (no ``bert.`` prefix) is accepted on import, its pooler mapping to
the classification head's pooler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from seqformer.errors import CheckpointError

# (HF name, seqformer name) inside one encoder layer.
_LAYER = [
    ("attention.self.query", "self_attn.q_proj"),
    ("attention.self.key", "self_attn.k_proj"),
    ("attention.self.value", "self_attn.v_proj"),
    ("attention.output.dense", "self_attn.out_proj"),
    ("attention.output.LayerNorm", "attn_block.norm"),
    ("intermediate.dense", "ffn.linear1"),
    ("output.dense", "ffn.linear2"),
    ("output.LayerNorm", "ffn_block.norm"),
]
# Everything outside the layers, full-model names.
_FIXED = [
    ("bert.embeddings.word_embeddings", "bert.embeddings.word"),
    ("bert.embeddings.position_embeddings", "bert.embeddings.position.embedding"),
    ("bert.embeddings.token_type_embeddings", "bert.embeddings.token_type"),
    ("bert.embeddings.LayerNorm", "bert.embeddings.norm"),
    ("bert.pooler.dense", "head.pooler"),
    ("cls.predictions.transform.dense", "head.transform"),
    ("cls.predictions.transform.LayerNorm", "head.norm"),
    ("cls.predictions.decoder", "head.decoder"),
    ("classifier", "head.classifier"),
    ("qa_outputs", "head.qa"),
]
_HF_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_OUR_LAYER = re.compile(r"^bert\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# Buffers HF keeps in some versions; derived, never weights.
_HF_BUFFERS = ("position_ids", "token_type_ids")


def _rename(name: str, pairs: list[tuple[str, str]], layer: re.Pattern[str], layer_fmt: str,
            swap: bool) -> str | None:
    m = layer.match(name)
    if m:
        index, inner, kind = m.groups()
        for a, b in pairs:
            src, dst = (b, a) if swap else (a, b)
            if inner == src:
                return layer_fmt.format(index, dst, kind)
        return None
    prefix, _, kind = name.rpartition(".")
    for a, b in _FIXED:
        src, dst = (b, a) if swap else (a, b)
        if prefix == src:
            return f"{dst}.{kind}"
    return None


def hf_to_seqformer(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Hugging Face BERT state dict to ``BERTModel`` names.

    ``cls.predictions.bias`` becomes the MLM head's bias (HF's ``decoder.bias`` is the same
    tensor and is dropped). An unknown name is a :class:`CheckpointError` naming it, because a
    silently skipped weight would leave a randomly initialised one in its place.
    """
    if not any(k.startswith("bert.") for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}  # a bare BertModel
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(_HF_BUFFERS):
            continue
        if name == "cls.predictions.bias":
            out["head.bias"] = tensor
            continue
        if name == "cls.predictions.decoder.bias":
            continue
        new = _rename(name, _LAYER, _HF_LAYER, "bert.encoder.layers.{}.{}.{}", swap=False)
        if new is None:
            raise CheckpointError(f"Hugging Face BERT weight {name!r} has no seqformer "
                                  "counterpart; only BertFor{MaskedLM,SequenceClassification,"
                                  "TokenClassification,QuestionAnswering} layouts are known")
        out[new] = tensor
    return out


def seqformer_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a ``BERTModel`` state dict to Hugging Face names (the inverse of
    :func:`hf_to_seqformer`); the MLM bias is written both as ``cls.predictions.bias`` and
    ``cls.predictions.decoder.bias``, which HF ties."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name == "head.bias":
            out["cls.predictions.bias"] = tensor
            out["cls.predictions.decoder.bias"] = tensor
            continue
        new = _rename(name, _LAYER, _OUR_LAYER, "bert.encoder.layer.{}.{}.{}", swap=True)
        if new is None:
            raise CheckpointError(f"seqformer weight {name!r} has no Hugging Face BERT "
                                  "counterpart")
        out[new] = tensor
    return out


def config_from_hf(hf_config) -> dict[str, object]:
    """``BERTConfig`` fields from a ``transformers.BertConfig`` (read by attribute only)."""
    if getattr(hf_config, "hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act={hf_config.hidden_act!r}: only exact 'gelu' BERTs "
                              "map onto seqformer's blocks")
    return {
        "vocab_size": hf_config.vocab_size,
        "type_vocab_size": hf_config.type_vocab_size,
        "d_model": hf_config.hidden_size,
        "heads": hf_config.num_attention_heads,
        "layers": hf_config.num_hidden_layers,
        "ffn_dim": hf_config.intermediate_size,
        "max_len": hf_config.max_position_embeddings,
        "dropout": hf_config.hidden_dropout_prob,
        "attention_dropout": hf_config.attention_probs_dropout_prob,
        "norm_eps": hf_config.layer_norm_eps,
    }
