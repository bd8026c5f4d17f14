"""Hugging Face BERT directories <-> seqformer encoder runs (``seqformer import`` / ``export``).

The weight names map one to one (:mod:`seqformer.interop.hf_bert`); what differs is the
vocabulary order. seqformer's encoder tasks expect ``[PAD] [CLS] [SEP] [UNK] [MASK]`` at ids
0-4 (:mod:`seqformer.data.wordpiece`), while BERT checkpoints put them anywhere (``[CLS]`` is
101 in bert-base-uncased and MiniLM). Import therefore *renumbers* the vocabulary: the five
specials first, every other token after them in its original order, and the rows of the word
embeddings (and of the MLM output bias) permuted the same way. The model computes exactly the
same function of the text; only the ids change. Export writes the renumbered vocabulary with
the weights, a consistent Hugging Face checkpoint of its own.

The tokenizer keeps the checkpoint's normaliser and pre-tokeniser (read from
``tokenizer.json``, or rebuilt from ``vocab.txt`` with BERT's defaults), so a sentence is cut
into the same pieces as ``transformers`` cuts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from seqformer.data.wordpiece import WORDPIECE_SPECIALS, WordPieceTokenizer
from seqformer.errors import CheckpointError
from seqformer.interop import hf_bert
from seqformer.interop.hf_io import load_hf_state_dict, read_hf_config, save_hf_dir
from seqformer.models.bert import BERTConfig, BERTModel

TOKENIZER_DIR = "tokenizer"


def _hf_vocab(src: Path) -> tuple[dict[str, int], dict[str, Any] | None]:
    """The checkpoint's token -> id map, and its ``tokenizer.json`` content when there is one."""
    path = src / "tokenizer.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data.get("model", {})
        if model.get("type") != "WordPiece":
            raise CheckpointError(f"{path}: a {model.get('type')} tokenizer; BERT import needs "
                                  "WordPiece")
        return dict(model["vocab"]), data
    path = src / "vocab.txt"
    if path.is_file():
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        return {t: i for i, t in enumerate(tokens)}, None
    raise CheckpointError(f"{src}: no tokenizer.json or vocab.txt; a BERT directory needs its "
                          "vocabulary to be imported")


def renumbering(vocab: dict[str, int], where: Path) -> list[int]:
    """``order[new_id] = old_id``: the five specials first, the rest in their old order."""
    missing = [t for t in WORDPIECE_SPECIALS if t not in vocab]
    if missing:
        raise CheckpointError(f"{where}: the vocabulary lacks {', '.join(missing)}; seqformer's "
                              "encoder tasks need all of " + " ".join(WORDPIECE_SPECIALS))
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise CheckpointError(f"{where}: vocabulary ids are not 0..{len(by_id) - 1}")
    specials = [vocab[t] for t in WORDPIECE_SPECIALS]
    rest = [i for _, i in by_id if i not in set(specials)]
    return specials + rest


def _tokenizer(src: Path, vocab: dict[str, int], data: dict[str, Any] | None,
               order: list[int], lowercase: bool) -> WordPieceTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    token_of = {i: t for t, i in vocab.items()}
    new_vocab = {token_of[old]: new for new, old in enumerate(order)}
    if data is None:  # vocab.txt only: BERT's own pipeline
        data = {"version": "1.0", "normalizer": {
            "type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
            "strip_accents": None, "lowercase": lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                      "continuing_subword_prefix": "##", "max_input_chars_per_word": 100}}
    data = dict(data)
    data["model"] = {**data["model"], "vocab": new_vocab}
    data["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, t in enumerate(WORDPIECE_SPECIALS)]
    # seqformer adds [CLS]/[SEP] itself and pads per batch.
    for key in ("post_processor", "truncation", "padding"):
        data[key] = None
    try:
        return WordPieceTokenizer(HFTokenizer.from_str(json.dumps(data)))
    except Exception as exc:  # tokenizers raises plain Exception on a bad file
        raise CheckpointError(f"{src}: cannot rebuild its WordPiece tokenizer ({exc})") from None


def _head(state: dict[str, torch.Tensor], hf: dict[str, Any]) -> tuple[str, list[str]]:
    if "head.transform.weight" in state:
        return "mlm", []
    if "head.classifier.weight" in state and state["head.classifier.weight"].dim() == 2:
        labels = hf.get("id2label") or {}
        n = state["head.classifier.weight"].shape[0]
        names = [str(labels.get(str(i), labels.get(i, f"LABEL_{i}"))) for i in range(n)]
        kind = "classify" if "head.pooler.weight" in state else "tag"
        return kind, names
    if "head.qa.weight" in state:
        return "qa", []
    return "none", []


def load(src: str | Path, trust_pickle: bool = False) -> tuple[BERTModel, WordPieceTokenizer]:
    """An encoder run (model + renumbered tokenizer) from the local BERT directory ``src``."""
    src = Path(src)
    hf = read_hf_config(src)
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{src / 'config.json'}: position_embedding_type "
                              f"{hf['position_embedding_type']!r}; only absolute is supported")
    fields = hf_bert.config_from_hf(SimpleNamespace(**{
        "hidden_act": "gelu", "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, **hf}))
    config = BERTConfig(**fields)
    state = hf_bert.hf_to_seqformer(load_hf_state_dict(src, trust_pickle))
    if "head.classifier.weight" not in state:  # a pooler without a classifier: unused here
        state.pop("head.pooler.weight", None)
        state.pop("head.pooler.bias", None)
    head, labels = _head(state, hf)
    vocab, data = _hf_vocab(src)
    if len(vocab) != config.vocab_size:
        raise CheckpointError(f"{src}: the vocabulary has {len(vocab)} tokens but config.json "
                              f"says vocab_size {config.vocab_size}")
    order = renumbering(vocab, src)
    index = torch.tensor(order)
    for name in ("bert.embeddings.word.weight", "head.bias"):
        if name in state:
            state[name] = state[name].index_select(0, index)
    state.pop("head.decoder.weight", None)  # tied to the word embeddings
    model = BERTModel(config, head, labels)
    expected = set(model.state_dict())
    expected.discard("head.decoder.weight")
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(f"{src}: weights do not fit a BERT with a {head} head "
                              f"(missing {sorted(missing)[:3]}, unexpected "
                              f"{sorted(unexpected)[:3]})")
    model.load_state_dict(state, strict=False)
    lowercase = bool(hf.get("do_lower_case", _lowercase(src)))
    return model.eval(), _tokenizer(src, vocab, data, order, lowercase)


def _lowercase(src: Path) -> bool:
    path = src / "tokenizer_config.json"
    if path.is_file():
        return bool(json.loads(path.read_text(encoding="utf-8")).get("do_lower_case", True))
    return True


def import_dir(src: Path, out: Path, trust_pickle: bool) -> str:
    model, tokenizer = load(src, trust_pickle)
    model.save(out)
    tokenizer.save(out / TOKENIZER_DIR)
    return "bert"


ARCHITECTURES = {"mlm": "BertForMaskedLM", "classify": "BertForSequenceClassification",
                 "tag": "BertForTokenClassification", "qa": "BertForQuestionAnswering",
                 "none": "BertModel"}


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the encoder run ``model_dir`` as a Hugging Face BERT directory (its vocabulary in
    seqformer's order: specials at 0-4)."""
    from seqformer.data.tokenizer import load_tokenizer

    model_dir, out = Path(model_dir), Path(out)
    model = BERTModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir / TOKENIZER_DIR)
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise CheckpointError(f"{model_dir / TOKENIZER_DIR}: not a WordPiece tokenizer")
    c = model.config
    # Tied tensors (decoder = word embeddings, the two MLM bias names) become separate copies:
    # safetensors refuses shared storage, and transformers re-ties them on load.
    state = {k: v.clone() for k, v in hf_bert.seqformer_to_hf(model.state_dict()).items()}
    if model.head_kind == "none":
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    config = {"model_type": "bert", "architectures": [ARCHITECTURES[model.head_kind]],
              "vocab_size": c.vocab_size, "hidden_size": c.d_model,
              "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
              "intermediate_size": c.ffn_dim, "hidden_act": c.activation,
              "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob":
              c.attention_dropout, "max_position_embeddings": c.max_len,
              "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.norm_eps,
              "pad_token_id": 0, "position_embedding_type": "absolute"}
    if model.labels:
        config["id2label"] = dict(enumerate(model.labels))
        config["label2id"] = {name: i for i, name in enumerate(model.labels)}
    save_hf_dir(out, config, state)
    tokenizer.hf.save(str(out / "tokenizer.json"))
    vocab = [tokenizer.hf.id_to_token(i) for i in range(tokenizer.vocab_size)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    names = dict(zip(("pad_token", "cls_token", "sep_token", "unk_token", "mask_token"),
                     WORDPIECE_SPECIALS))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, **names}, indent=2) + "\n",
        encoding="utf-8")
    return "bert"
