"""Marian / opus-mt (``MarianMTModel``) <-> seqformer Seq2Seq: config and state-dict mappings.

Marian is the post-LN encoder-decoder of Vaswani et al. with a few choices of its own, each an
option of ``Seq2SeqConfig``: SiLU ("swish") feed-forward activation, sqrt(d) embedding scale,
sinusoids laid out as [sin | cos] (``positional: sinusoidal_concat``), no final LayerNorm
(post-LN), one embedding matrix shared by encoder, decoder and output, a ``final_logits_bias``
(``output_bias``), and its own special ids (eos 0, pad last; decoding starts from pad).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_io import (
    load_checkpoint,
    save_hf_dir,
    take,
)
from seqformer.interop.hf_tokenizers import SentencePieceTokenizer, marian_tokenizers
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig

ACTIVATIONS = {"swish": "silu", "silu": "silu", "gelu": "gelu", "relu": "relu",
               "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
EXPORT_ACTIVATIONS = {"silu": "swish", "gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}

# (HF name inside a layer, our name inside the same layer) per stack.
ENCODER_LAYER = [("self_attn", "self_attn"), ("self_attn_layer_norm", "attn_block.norm"),
                 ("fc1", "ffn.linear1"), ("fc2", "ffn.linear2"),
                 ("final_layer_norm", "ffn_block.norm")]
DECODER_LAYER = [("self_attn", "self_attn"), ("self_attn_layer_norm", "self_block.norm"),
                 ("encoder_attn", "cross_attn"), ("encoder_attn_layer_norm", "cross_block.norm"),
                 ("fc1", "ffn.linear1"), ("fc2", "ffn.linear2"),
                 ("final_layer_norm", "ffn_block.norm")]
ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> Seq2SeqConfig:
    """Our Seq2SeqConfig for a Marian ``config.json``; what we cannot express is refused."""
    def get(name: str, default: Any) -> Any:
        value = hf.get(name)
        return default if value is None else value

    problems = []
    if not get("share_encoder_decoder_embeddings", True):
        problems.append("share_encoder_decoder_embeddings=false")
    vocab = int(get("vocab_size", 58101))
    if int(get("decoder_vocab_size", vocab)) != vocab:
        problems.append("decoder_vocab_size != vocab_size")
    if get("encoder_attention_heads", 16) != get("decoder_attention_heads", 16):
        problems.append("different encoder/decoder attention heads")
    if get("encoder_ffn_dim", 4096) != get("decoder_ffn_dim", 4096):
        problems.append("different encoder/decoder ffn dims")
    if get("normalize_before", False) or get("add_final_layer_norm", False):
        problems.append("pre-LN Marian variants")
    activation = get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        problems.append(f"activation_function={activation!r}")
    if problems:
        raise CheckpointError(f"{where}: not supported by seqformer's Seq2Seq: "
                              f"{'; '.join(problems)}")
    eos = get("eos_token_id", 0)
    eos = int(eos[0] if isinstance(eos, list) else eos)
    pad = int(get("pad_token_id", vocab - 1))
    return Seq2SeqConfig(
        src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=int(get("d_model", 1024)),
        heads=int(get("encoder_attention_heads", 16)),
        encoder_layers=int(get("encoder_layers", 12)),
        decoder_layers=int(get("decoder_layers", 12)),
        layers=int(get("encoder_layers", 12)), ffn_dim=int(get("encoder_ffn_dim", 4096)),
        dropout=float(get("dropout", 0.1)), attention_dropout=float(get("attention_dropout", 0.0)),
        activation=ACTIVATIONS[activation], norm_first=False, positional="sinusoidal_concat",
        max_len=int(get("max_position_embeddings", 1024)), share_embeddings=True,
        tie_output=bool(get("tie_word_embeddings", True)),
        scale_embedding=bool(get("scale_embedding", False)), output_bias=True,
        pad_id=pad, bos_id=int(get("decoder_start_token_id", pad)), eos_id=eos)


def config_to_hf(c: Seq2SeqConfig) -> dict[str, Any]:
    """A Marian ``config.json`` for our config; refuses what Marian cannot express."""
    problems = []
    if c.norm_first:
        problems.append("norm_first=true (Marian is post-LN)")
    if c.positional != "sinusoidal_concat":
        problems.append(f"positional={c.positional!r} (Marian uses sinusoidal_concat)")
    if not c.share_embeddings:
        problems.append("share_embeddings=false")
    if c.activation not in EXPORT_ACTIVATIONS:
        problems.append(f"activation={c.activation!r}")
    if c.encoder_block != "transformer":
        problems.append(f"encoder_block={c.encoder_block!r} (Marian has no such encoder)")
    if problems:
        raise ConfigError(f"cannot export this model as Marian: {'; '.join(problems)}")
    return {
        "architectures": ["MarianMTModel"], "model_type": "marian",
        "vocab_size": c.src_vocab_size, "decoder_vocab_size": c.tgt_vocab_size,
        "d_model": c.d_model, "encoder_layers": c.n_encoder_layers,
        "decoder_layers": c.n_decoder_layers, "encoder_attention_heads": c.heads,
        "decoder_attention_heads": c.heads, "encoder_ffn_dim": c.ffn_dim,
        "decoder_ffn_dim": c.ffn_dim, "activation_function": EXPORT_ACTIVATIONS[c.activation],
        "dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": 0.0, "max_position_embeddings": c.max_len,
        "scale_embedding": c.scale_embedding, "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": c.tie_output, "pad_token_id": c.pad_id,
        "eos_token_id": c.eos_id, "decoder_start_token_id": c.bos_id,
        "forced_eos_token_id": c.eos_id, "is_encoder_decoder": True,
    }


def _shared_embedding(hf: dict[str, Tensor], where: str) -> Tensor:
    """``save_pretrained`` keeps one of the tied copies; which one depends on the version."""
    for name in ("model.shared.weight", "model.encoder.embed_tokens.weight",
                 "model.decoder.embed_tokens.weight"):
        if name in hf:
            return hf[name]
    raise CheckpointError(f"{where}: no shared embedding (model.shared.weight) in the checkpoint")


def state_from_hf(hf: dict[str, Tensor], config: Seq2SeqConfig,
                  where: str = ".") -> dict[str, Tensor]:
    """MarianMTModel tensors -> Seq2Seq state dict."""
    hf = dict(hf)
    shared = _shared_embedding(hf, where)
    out: dict[str, Tensor] = {"src_embed.weight": shared, "tgt_embed.weight": shared}
    for theirs, ours in layer_names(config):
        out[ours] = take(hf, theirs, where)
    bias = hf.pop("final_logits_bias", None)
    out["output.bias"] = (shared.new_zeros(config.tgt_vocab_size) if bias is None
                          else bias.reshape(-1))
    head = hf.pop("lm_head.weight", None)
    if config.tie_output:
        out["output.weight"] = shared
    elif head is None:
        raise CheckpointError(f"{where}: lm_head.weight missing and tie_word_embeddings is false")
    else:
        out["output.weight"] = head
    known = ("model.shared.weight", "model.encoder.embed_tokens.weight",
             "model.decoder.embed_tokens.weight", "model.encoder.embed_positions.weight",
             "model.decoder.embed_positions.weight")
    left = [k for k in hf if k not in known and not k.startswith(("model.encoder.layers.",
                                                                   "model.decoder.layers."))]
    left += [k for k in hf if k.startswith(("model.encoder.layers.", "model.decoder.layers."))
             and k not in out]
    if left:
        raise CheckpointError(f"{where}: unexpected weights {sorted(left)[:3]}; not a Marian "
                              "model seqformer can map")
    return {k: v.contiguous() for k, v in out.items()}


def layer_names(config: Seq2SeqConfig) -> Iterator[tuple[str, str]]:
    """(MarianMTModel name, Seq2Seq name) of every encoder and decoder layer tensor, the one
    walk both directions of the mapping share."""
    for stack, n, layout in (("encoder", config.n_encoder_layers, ENCODER_LAYER),
                             ("decoder", config.n_decoder_layers, DECODER_LAYER)):
        for i in range(n):
            h, o = f"model.{stack}.layers.{i}.", f"{stack}.layers.{i}."
            for theirs, ours in layout:
                subs = ATTENTION if theirs in ("self_attn", "encoder_attn") else ("",)
                for sub in subs:
                    t, u = (f"{theirs}.{sub}", f"{ours}.{sub}") if sub else (theirs, ours)
                    for p in ("weight", "bias"):
                        yield f"{h}{t}.{p}", f"{o}{u}.{p}"


def state_to_hf(model: Seq2Seq) -> dict[str, Tensor]:
    """Seq2Seq -> MarianMTModel tensors (tied copies left out, as ``save_pretrained`` does)."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    out = {"model.shared.weight": s["src_embed.weight"],
           "final_logits_bias": (s["output.bias"] if "output.bias" in s
                                 else s["src_embed.weight"].new_zeros(c.tgt_vocab_size))
           .reshape(1, -1)}
    for theirs, ours in layer_names(c):
        out[theirs] = s[ours]
    if not c.tie_output:
        out["lm_head.weight"] = s["output.weight"]
    return out


def special_ids(config: Seq2SeqConfig, unk: int) -> dict[str, int]:
    return {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id, "unk": unk}


def load_tokenizers(directory: str | Path, config: Seq2SeqConfig
                    ) -> tuple[SentencePieceTokenizer, SentencePieceTokenizer] | None:
    """(source, target) SentencePiece tokenizers of the checkpoint, None if it has none."""
    import json

    vocab_path = Path(directory) / "vocab.json"
    unk = 1
    if vocab_path.is_file():
        unk = int(json.loads(vocab_path.read_text(encoding="utf-8")).get("<unk>", 1))
    return marian_tokenizers(directory, special_ids(config, unk))


def load(directory: str | Path, trust_pickle: bool = False) -> Seq2Seq:
    """A Seq2Seq with the weights of the Marian checkpoint in ``directory`` (eval mode)."""
    return load_checkpoint(directory, "marian", Seq2Seq, config_from_hf, state_from_hf,
                           trust_pickle)


def save(model: Seq2Seq, directory: str | Path,
         tokenizers: tuple[SentencePieceTokenizer, SentencePieceTokenizer] | None = None) -> None:
    """Write ``model`` as a Marian directory ``MarianMTModel.from_pretrained`` reads, and the
    ``source.spm``/``target.spm``/``vocab.json`` ``MarianTokenizer`` reads when given."""
    import json
    import shutil

    directory = Path(directory)
    save_hf_dir(directory, config_to_hf(model.config), state_to_hf(model))
    if tokenizers is not None:
        source, target = tokenizers
        shutil.copyfile(source.spm_path, directory / "source.spm")
        shutil.copyfile(target.spm_path, directory / "target.spm")
        (directory / "vocab.json").write_text(json.dumps(source.vocab, ensure_ascii=False,
                                                         indent=1) + "\n", encoding="utf-8")
        names = {f"{k}_token": source.inverse[v] for k, v in source.special_ids.items()
                 if k != "bos"}
        (directory / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "MarianTokenizer", **names}, indent=2) + "\n",
            encoding="utf-8")
