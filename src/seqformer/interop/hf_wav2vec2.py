"""Hugging Face wav2vec 2.0 / HuBERT / W2v-Conformer <-> seqformer's ``models/wav2vec2.py``.

Read (:func:`from_hf`, ``seqformer import``): a local directory holding ``Wav2Vec2Model``,
``Wav2Vec2ForPreTraining``, ``Wav2Vec2ForCTC``, ``Wav2Vec2ForSequenceClassification``,
``HubertModel`` / ``ForCTC`` / ``ForSequenceClassification`` or ``Wav2Vec2ConformerModel`` /
``ForPreTraining`` / ``ForCTC`` / ``ForSequenceClassification`` (``position_embeddings_type:
relative``). The head is recognised from the weights (``lm_head``, ``classifier``,
``quantizer``); a bare model becomes a ``family: wav2vec2`` encoder, which
``load_backbone`` reads like a pretraining run. HuBERT imports get ``objective: units``
(its pretraining objective, which HF does not ship). Safetensors only, unless
``trust_pickle``.

The names map one to one except: HF's ``encoder.layer_norm`` is our backbone's
``layer_norm``; the encoder layers are the shared ``nn/layers.py`` / ``nn/conformer.py``
blocks (``attention`` -> ``self_attn``, ``layer_norm`` / ``final_layer_norm`` -> the residual
blocks' norms, ``feed_forward.intermediate_dense`` / ``output_dense`` -> ``ffn.linear1`` /
``linear2``; Conformer ``linear_q`` ... -> ``q_proj`` ...); the positional conv's weight norm is
``parametrizations.weight.original0`` / ``original1`` (g / v) on both sides, and the legacy
``weight_g`` / ``weight_v`` are read too. HF builds ``masked_spec_embed`` only when
``mask_time_prob`` or ``mask_feature_prob`` > 0; without it ours starts at zero. HF's Conformer
has a positional conv it never calls: dropped on import, written back as a valid placeholder on
export so ``from_pretrained`` finds every weight.

Write (:func:`export_dir`, ``seqformer export``): the inverse, for every family. The HF class
follows from the model: ``encoder_block: conformer`` -> wav2vec2-conformer; ``objective: units``
or no ``feat_proj_layer_norm`` -> hubert; otherwise wav2vec2. A pretraining run with the units,
reconstruction or W2v-BERT objective exports its encoder only (HF has no such head), as the bare
``HubertModel`` / ``Wav2Vec2Model``. Fields HF lacks (the Gumbel schedule, objective, unit and
target sizes, W2v-BERT's ``contrastive_layers`` / ``mlm_weight``) travel in a ``seqformer``
entry of ``config.json``, which import reads back; ``preprocessor_config.json`` is a
``Wav2Vec2FeatureExtractor`` for our ``features`` (``sample_rate``, ``normalize``).

CTC vocabularies travel both ways: import reads a ``Wav2Vec2CTCTokenizer``'s ``vocab.json``
(+ ``tokenizer_config.json``) into ``tokenizer/`` (kind ``hf-ctc``, ``interop/hf_tokenizers``),
so ``seqformer transcribe`` / ``evaluate`` take the imported directory; export writes a CTC
run's tokenizer back as one, so ``Wav2Vec2Processor.from_pretrained`` loads. The CTC blank is
HF's ``pad_token_id``, which need not be 0: the tokenizer's pad id carries it to the decoder
(``tasks/speech_ctc.py``); our head's training loss keeps blank 0, so a model whose blank is
elsewhere is for inference (fine-tuning from it takes the encoder, under a fresh head).
Feature extraction: ``do_normalize`` (zero mean, unit variance per utterance) is read into
``features.normalize`` and honoured at inference. ``return_attention_mask`` needs no setting:
our encoder always reads each utterance's own samples (the padding-free statistics of
``models/wav2vec2.py``), which is what HF computes for one unpadded utterance either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.wav2vec2 import (
    FAMILY_CLASSIFY,
    FAMILY_CTC,
    FAMILY_ENCODER,
    FAMILY_PRETRAIN,
    Wav2Vec2Config,
    Wav2Vec2ForClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    load_wav2vec2,
)

MODEL_TYPES = ("wav2vec2", "hubert", "wav2vec2-conformer")
_PREFIX = {"wav2vec2": "wav2vec2.", "hubert": "hubert.",
           "wav2vec2-conformer": "wav2vec2_conformer."}
_NAMES = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wav2vec2-conformer": "Wav2Vec2Conformer"}
_HEADS = {None: "Model", "pretrain": "ForPreTraining", "ctc": "ForCTC",
          "classify": "ForSequenceClassification"}
_HEAD_PREFIXES = {"lm_head.": "ctc", "classifier.": "classify", "projector.": "classify",
                  "quantizer.": "pretrain", "project_hid.": "pretrain", "project_q.": "pretrain"}
_FAMILY = {None: FAMILY_ENCODER, "pretrain": FAMILY_PRETRAIN, "ctc": FAMILY_CTC,
           "classify": FAMILY_CLASSIFY}
_CLASS = {None: Wav2Vec2Model, "pretrain": Wav2Vec2ForPreTraining, "ctc": Wav2Vec2ForCTC,
          "classify": Wav2Vec2ForClassification}
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "swish": "silu", "silu": "silu",
                "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATIONS_TO_HF = {"gelu": "gelu", "relu": "relu", "silu": "swish",
                      "gelu_tanh": "gelu_pytorch_tanh"}

# Per encoder layer, HF module -> ours (the parameter name after it is kept).
_TRANSFORMER_LAYER = {
    "attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj", "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "attn_block.norm", "feed_forward.intermediate_dense": "ffn.linear1",
    "feed_forward.output_dense": "ffn.linear2", "final_layer_norm": "ffn_block.norm",
}
_CONFORMER_LAYER = {
    "ffn1_layer_norm": "ffn1_norm", "ffn1.intermediate_dense": "ffn1.linear1",
    "ffn1.output_dense": "ffn1.linear2", "ffn2_layer_norm": "ffn2_norm",
    "ffn2.intermediate_dense": "ffn2.linear1", "ffn2.output_dense": "ffn2.linear2",
    "self_attn_layer_norm": "attn_norm", "self_attn.linear_q": "attn.q_proj",
    "self_attn.linear_k": "attn.k_proj", "self_attn.linear_v": "attn.v_proj",
    "self_attn.linear_out": "attn.out_proj", "self_attn.linear_pos": "attn.pos_proj",
    "self_attn": "attn",  # pos_bias_u / pos_bias_v
    "conv_module.layer_norm": "conv.norm", "conv_module.pointwise_conv1": "conv.pointwise1",
    "conv_module.depthwise_conv": "conv.depthwise", "conv_module.batch_norm": "conv.batch_norm",
    "conv_module.pointwise_conv2": "conv.pointwise2", "final_layer_norm": "final_norm",
}
_POS = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM = "parametrizations.weight.original"
_FIXED = {  # HF backbone name -> ours
    "encoder.layer_norm.weight": "layer_norm.weight",
    "encoder.layer_norm.bias": "layer_norm.bias",
    _POS + "bias": "pos_conv.conv.bias",
    _POS + _WEIGHT_NORM + "0": "pos_conv.conv." + _WEIGHT_NORM + "0",
    _POS + _WEIGHT_NORM + "1": "pos_conv.conv." + _WEIGHT_NORM + "1",
    _POS + "weight_g": "pos_conv.conv." + _WEIGHT_NORM + "0",  # torch's legacy weight_norm
    _POS + "weight_v": "pos_conv.conv." + _WEIGHT_NORM + "1",
}
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.([^.]+)$")
_SAME = ("feature_extractor.", "feature_projection.", "masked_spec_embed")


def _getter(hf: Mapping[str, Any] | Any) -> Any:
    return hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))


def detect_head(state: Mapping[str, Tensor]) -> str | None:
    """"pretrain", "ctc", "classify" or None (a bare model) from the checkpoint's names."""
    heads = {head for name in state for prefix, head in _HEAD_PREFIXES.items()
             if name.startswith(prefix)}
    if len(heads) > 1:
        raise CheckpointError(f"weights of several heads ({', '.join(sorted(heads))}) in one "
                              "checkpoint; not a single Hugging Face wav2vec2 model")
    return heads.pop() if heads else None


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json",
                   head: str | None = None) -> Wav2Vec2Config:
    """Our config from a HF wav2vec2 / hubert / wav2vec2-conformer config (``config.json``
    dict or config object); what our blocks cannot compute is a one-line CheckpointError."""
    get = _getter(hf)
    kind = get("model_type")
    if kind not in MODEL_TYPES:
        raise CheckpointError(f"{where}: model_type={kind!r}, not one of {', '.join(MODEL_TYPES)}")
    act = get("hidden_act", "gelu")
    refusals = [
        (get("feat_extract_activation", "gelu") != "gelu",
         f"feat_extract_activation={get('feat_extract_activation')!r} (only 'gelu')"),
        (act not in _ACTIVATIONS, f"hidden_act={act!r} (use one of {', '.join(_ACTIVATIONS)})"),
        (get("layer_norm_eps", 1e-5) != 1e-5, f"layer_norm_eps={get('layer_norm_eps')} "
                                              "(only 1e-5)"),
        (bool(get("add_adapter", False)) or get("adapter_attn_dim") is not None,
         "adapters (add_adapter / adapter_attn_dim)"),
        (bool(get("use_weighted_layer_sum", False)), "use_weighted_layer_sum=true"),
        (bool(get("conv_pos_batch_norm", False)), "conv_pos_batch_norm=true"),
        (kind == "wav2vec2-conformer" and get("position_embeddings_type") != "relative",
         f"position_embeddings_type={get('position_embeddings_type')!r} (only 'relative')"),
    ]
    for refused, what in refusals:
        if refused:
            raise CheckpointError(f"{where}: {what} is not supported by seqformer's wav2vec2")
    labels = get("id2label") or {}
    ours = get("seqformer") or {}  # what our export writes that HF has no field for
    conformer = kind == "wav2vec2-conformer"
    defaults = Wav2Vec2Config()
    return Wav2Vec2Config(
        conv_dim=tuple(get("conv_dim", (512,) * 7)),
        conv_kernel=tuple(get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))),
        conv_stride=tuple(get("conv_stride", (5, 2, 2, 2, 2, 2, 2))),
        feat_extract_norm=get("feat_extract_norm", "group"),
        conv_bias=bool(get("conv_bias", False)),
        feat_proj_layer_norm=bool(get("feat_proj_layer_norm", True)),
        d_model=get("hidden_size"), heads=get("num_attention_heads"),
        layers=get("num_hidden_layers"), ffn_dim=get("intermediate_size"),
        activation=_ACTIVATIONS[act],
        norm_first=bool(get("do_stable_layer_norm", False)) and not conformer,
        pos_conv_kernel=get("num_conv_pos_embeddings", 128),
        pos_conv_groups=get("num_conv_pos_embedding_groups", 16),
        encoder_block="conformer" if conformer else "transformer",
        depthwise_kernel=get("conv_depthwise_kernel_size", 31) if conformer else 31,
        dropout=get("hidden_dropout", 0.1), attention_dropout=get("attention_dropout", 0.1),
        activation_dropout=get("activation_dropout", 0.1),
        feat_proj_dropout=get("feat_proj_dropout", 0.0), final_dropout=get("final_dropout", 0.1),
        objective=ours.get("objective", "units" if kind == "hubert" else "contrastive"),
        codevector_groups=get("num_codevector_groups", defaults.codevector_groups),
        codevectors_per_group=get("num_codevectors_per_group", defaults.codevectors_per_group),
        codevector_dim=get("codevector_dim", defaults.codevector_dim),
        proj_codevector_dim=get("proj_codevector_dim", defaults.proj_codevector_dim),
        num_negatives=get("num_negatives", defaults.num_negatives),
        logit_temperature=get("contrastive_logits_temperature", 0.1),
        diversity_weight=get("diversity_loss_weight", 0.1),
        gumbel_temperature=tuple(ours.get("gumbel_temperature", defaults.gumbel_temperature)),
        num_units=int(ours.get("num_units", 0)), unit_dim=int(ours.get("unit_dim", 64)),
        target_dim=int(ours.get("target_dim", 0)),
        contrastive_layers=ours.get("contrastive_layers"),
        mlm_weight=float(ours.get("mlm_weight", defaults.mlm_weight)),
        mask_time_prob=get("mask_time_prob", 0.05), mask_time_length=get("mask_time_length", 10),
        vocab_size=(get("vocab_size") or 0) if head == "ctc" else 0,
        num_labels=(get("num_labels", None) or len(labels) or 2) if head == "classify" else 0,
        classifier_proj_size=get("classifier_proj_size", 256),
        ctc_reduction=get("ctc_loss_reduction", "sum"))


def _backbone_name(name: str, conformer: bool, where: str) -> str | None:
    """Our name (inside the backbone) for the HF backbone weight ``name``; None to drop."""
    if name.startswith(_SAME):
        return name
    if name in _FIXED:
        return None if conformer and name.startswith(_POS) else _FIXED[name]
    table = _CONFORMER_LAYER if conformer else _TRANSFORMER_LAYER
    if (m := _LAYER.match(name)) and m.group(2) in table:
        index, module, param = m.groups()
        return f"encoder.layers.{index}.{table[module]}.{param}"
    raise CheckpointError(f"{where}: Hugging Face weight {name!r} has no seqformer counterpart")


def state_from_hf(hf: Mapping[str, Tensor], config: Wav2Vec2Config, model_type: str,
                  head: str | None, where: str = ".") -> dict[str, Tensor]:
    """A HF state dict under our names (``wav2vec2.`` + backbone for head models)."""
    prefix, out = _PREFIX[model_type], {}
    inner = "" if head is None else "wav2vec2."
    for name, tensor in hf.items():
        if any(name.startswith(p) for p in _HEAD_PREFIXES):
            out[name] = tensor  # heads share HF's names
            continue
        bare = name[len(prefix):] if name.startswith(prefix) else name
        ours = _backbone_name(bare, config.encoder_block == "conformer", where)
        if ours is not None:
            out[inner + ours] = tensor
    if inner + "masked_spec_embed" not in out:  # HF builds it only when it masks
        out[inner + "masked_spec_embed"] = torch.zeros(config.d_model)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None


def from_hf(path: str | Path, trust_pickle: bool = False) -> nn.Module:
    """The HF model in the local directory ``path`` as ours (eval mode): a
    :class:`Wav2Vec2Model` for a bare model, else the head model."""
    from seqformer.interop.hf_io import load_hf_state_dict, read_hf_config
    from seqformer.training.checkpoint import check_state

    path = Path(path)
    hf_config = read_hf_config(path)
    where = str(path / "config.json")
    hf_state = load_hf_state_dict(path, trust_pickle)
    head = detect_head(hf_state)
    config = config_from_hf(hf_config, where, head)
    blank = hf_config.get("pad_token_id", 0)
    if head == "ctc" and blank != 0 and not (path / "vocab.json").is_file():
        raise CheckpointError(f"{where}: pad_token_id={blank} (the CTC blank) with no "
                              "vocab.json next to it; seqformer reads a blank other than 0 from "
                              "the tokenizer's pad token, so add the Wav2Vec2CTCTokenizer files")
    model = _CLASS[head](config)
    if head == "classify":
        id2label = hf_config.get("id2label") or {}
        model.labels = [str(id2label.get(str(i), i)) for i in range(config.num_labels)]
    state = state_from_hf(hf_state, config, hf_config["model_type"], head, str(path))
    check_state(state, model.state_dict(), path)
    model.load_state_dict(state, strict=True)
    return model.eval()


def features_from_hf(directory: str | Path) -> dict[str, Any]:
    """Our ``features`` (sample_rate, normalize) from ``preprocessor_config.json``
    (Wav2Vec2FeatureExtractor), or from the ``feature_extractor`` entry of
    ``processor_config.json`` (where transformers 5's ``Wav2Vec2Processor.save_pretrained``
    puts it); 16 kHz, normalised when there is neither."""
    path = Path(directory) / "preprocessor_config.json"
    processor = Path(directory) / "processor_config.json"
    hf = _read_json(path) if path.is_file() else {}
    if not hf and processor.is_file():
        hf = _read_json(processor).get("feature_extractor") or {}
    return {"sample_rate": int(hf.get("sampling_rate", 16000)),
            "normalize": bool(hf.get("do_normalize", True))}


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF directory ``src`` as a seqformer model directory ``out`` (config.json with
    the family and ``features``, the weights, and for a CTC model with a ``vocab.json`` its
    tokenizer in ``tokenizer/``); returns the family."""
    from seqformer.interop.hf_io import read_hf_config
    from seqformer.interop.hf_tokenizers import ctc_tokenizer

    model = from_hf(src, trust_pickle)
    tokenizer = None
    if model.family == FAMILY_CTC:  # refused before anything is written
        blank = int(read_hf_config(Path(src)).get("pad_token_id", 0))
        tokenizer = ctc_tokenizer(src, model.config.vocab_size, blank)
    model.save(out, features_from_hf(src))
    if tokenizer is not None:
        tokenizer.save(Path(out) / "tokenizer")
    return model.family


# -- export ----------------------------------------------------------------------------------------

def export_target(model: nn.Module) -> tuple[str, str | None]:
    """(HF model_type, head) that ``model`` exports as; a ConfigError where HF has none."""
    c = model.config
    if c.frontend == "units":
        raise ConfigError("model.frontend=units (DiscreteBERT): Hugging Face's wav2vec2 / "
                          "HuBERT models have no unit front end, so there is nothing to "
                          "export it as")
    head = {FAMILY_ENCODER: None, FAMILY_PRETRAIN: "pretrain", FAMILY_CTC: "ctc",
            FAMILY_CLASSIFY: "classify"}[model.family]
    if head == "pretrain" and c.objective != "contrastive":
        head = None  # HF has no units / reconstruction / W2v-BERT head: the encoder alone
    if c.encoder_block == "conformer":
        if not c.feat_proj_layer_norm:
            raise ConfigError("model.feat_proj_layer_norm=false: Hugging Face's "
                              "Wav2Vec2Conformer always normalises the conv features")
        return "wav2vec2-conformer", head
    if c.objective == "units" or not c.feat_proj_layer_norm:
        if head == "pretrain":
            raise ConfigError("model.feat_proj_layer_norm=false with the contrastive objective: "
                              "Hugging Face has no HubertForPreTraining, and Wav2Vec2 always "
                              "normalises the conv features")
        return "hubert", head
    return "wav2vec2", head


def config_to_hf(model: nn.Module, labels: list[str] | None = None, blank: int = 0
                 ) -> dict[str, Any]:
    """The HF ``config.json`` for ``model`` (the inverse of :func:`config_from_hf`); ``blank``
    is the CTC blank, HF's ``pad_token_id``."""
    c = model.config
    kind, head = export_target(model)
    hf: dict[str, Any] = {
        "architectures": [_NAMES[kind] + _HEADS[head]], "model_type": kind,
        "hidden_size": c.d_model, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "intermediate_size": c.ffn_dim,
        "hidden_act": _ACTIVATIONS_TO_HF[c.activation], "hidden_dropout": c.dropout,
        "attention_dropout": c.attention_dropout, "activation_dropout": c.activation_dropout,
        "feat_proj_dropout": c.feat_proj_dropout, "final_dropout": c.final_dropout,
        "layerdrop": 0.0, "layer_norm_eps": 1e-5, "initializer_range": 0.02,
        "feat_extract_norm": c.feat_extract_norm, "feat_extract_activation": "gelu",
        "conv_dim": list(c.conv_dim), "conv_kernel": list(c.conv_kernel),
        "conv_stride": list(c.conv_stride), "conv_bias": c.conv_bias,
        "num_conv_pos_embeddings": c.pos_conv_kernel,
        "num_conv_pos_embedding_groups": c.pos_conv_groups,
        "do_stable_layer_norm": c.norm_first, "apply_spec_augment": True,
        "mask_time_prob": c.mask_time_prob, "mask_time_length": c.mask_time_length,
        "mask_time_min_masks": 2, "mask_feature_prob": 0.0, "mask_feature_length": 10,
        "vocab_size": c.vocab_size or 32, "pad_token_id": blank, "bos_token_id": 1,
        "eos_token_id": 2, "ctc_loss_reduction": c.ctc_reduction, "ctc_zero_infinity": True,
        "use_weighted_layer_sum": False, "classifier_proj_size": c.classifier_proj_size,
        "seqformer": {"objective": c.objective, "gumbel_temperature": list(c.gumbel_temperature),
                      "num_units": c.num_units, "unit_dim": c.unit_dim,
                      "target_dim": c.target_dim, "contrastive_layers": c.contrastive_layers,
                      "mlm_weight": c.mlm_weight},
    }
    if kind != "hubert":
        hf.update({"num_codevector_groups": c.codevector_groups,
                   "num_codevectors_per_group": c.codevectors_per_group,
                   "codevector_dim": c.codevector_dim,
                   "proj_codevector_dim": c.proj_codevector_dim,
                   "num_negatives": c.num_negatives,
                   "contrastive_logits_temperature": c.logit_temperature,
                   "diversity_loss_weight": c.diversity_weight, "feat_quantizer_dropout": 0.0})
    else:
        hf.update({"feat_proj_layer_norm": c.feat_proj_layer_norm, "conv_pos_batch_norm": False})
    if kind == "wav2vec2-conformer":
        hf.update({"position_embeddings_type": "relative", "max_source_positions": 5000,
                   "conv_depthwise_kernel_size": c.depthwise_kernel,
                   "conformer_conv_dropout": c.dropout, "do_stable_layer_norm": False})
    if head == "classify":
        names = list(labels or []) or [f"LABEL_{i}" for i in range(c.num_labels)]
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
    return hf


def state_to_hf(model: nn.Module) -> dict[str, Tensor]:
    """Our state dict under the HF names of :func:`export_target` (the inverse of
    :func:`state_from_hf`)."""
    c = model.config
    kind, head = export_target(model)
    conformer = c.encoder_block == "conformer"
    table = {ours: theirs for theirs, ours in
             (_CONFORMER_LAYER if conformer else _TRANSFORMER_LAYER).items()}
    fixed = {ours: theirs for theirs, ours in _FIXED.items() if "weight_" not in theirs}
    layer = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.([^.]+)$")
    prefix = "" if head is None else _PREFIX[kind]
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if not isinstance(model, Wav2Vec2Model):
            if not name.startswith("wav2vec2."):
                if head is not None:
                    out[name] = tensor  # heads share HF's names
                continue  # a units / reconstruction head: HF has none
            name = name[len("wav2vec2."):]
        if name == "masked_spec_embed" and c.mask_time_prob == 0:
            continue  # HF builds it only when it masks
        if name.startswith(_SAME):
            out[prefix + name] = tensor
        elif name in fixed:
            out[prefix + fixed[name]] = tensor
        elif (m := layer.match(name)) and m.group(2) in table:
            index, module, param = m.groups()
            out[f"{prefix}encoder.layers.{index}.{table[module]}.{param}"] = tensor
        else:
            raise CheckpointError(f"wav2vec2 weight {name!r} has no Hugging Face counterpart")
    if conformer:  # built but never called by HF's Conformer encoder: any valid weights do
        groups, kernel = c.pos_conv_groups, c.pos_conv_kernel
        out[prefix + _POS + "bias"] = torch.zeros(c.d_model)
        out[prefix + _POS + _WEIGHT_NORM + "0"] = torch.ones(1, 1, kernel)
        out[prefix + _POS + _WEIGHT_NORM + "1"] = torch.ones(c.d_model, c.d_model // groups,
                                                             kernel)
    return out


def features_to_hf(features: Mapping[str, Any] | None, model: nn.Module) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``Wav2Vec2FeatureExtractor`` (the inverse of
    :func:`features_from_hf`); it asks for an attention mask where HF's models use one (the
    LayerNorm feature encoders), as HF's own configs do."""
    features = dict(features or {})
    return {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
            "sampling_rate": int(features.get("sample_rate", 16000)), "padding_value": 0.0,
            "padding_side": "right", "do_normalize": bool(features.get("normalize", True)),
            "return_attention_mask": model.config.feat_extract_norm == "layer"}


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the wav2vec2-family model ``model_dir`` as a HF directory ``out``:
    ``config.json`` + ``model.safetensors`` for ``from_pretrained`` and
    ``preprocessor_config.json``, and for a CTC model with a tokenizer the
    ``Wav2Vec2CTCTokenizer`` files, so ``Wav2Vec2Processor.from_pretrained(out)`` loads;
    returns the model_type written."""
    from seqformer.data.tokenizer import TOKENIZER_FILE, load_tokenizer
    from seqformer.interop.hf_io import save_hf_dir
    from seqformer.interop.hf_tokenizers import ctc_tokenizer_files, write_json_files
    from seqformer.models.wav2vec2 import read_wav2vec2_config
    from seqformer.tasks.rundir import check_vocabulary

    model_dir, out = Path(model_dir), Path(out)
    model = load_wav2vec2(model_dir)
    tokenizer = None
    if model.family == FAMILY_CTC and (model_dir / "tokenizer" / TOKENIZER_FILE).is_file():
        tokenizer = load_tokenizer(model_dir / "tokenizer")
        check_vocabulary(model_dir, tokenizer.vocab_size, model.config.vocab_size)
    blank = tokenizer.pad_id if tokenizer is not None else 0
    # Refusals before writing.
    config = config_to_hf(model, getattr(model, "labels", None), blank)
    processor = features_to_hf(read_wav2vec2_config(model_dir).get("features"), model)
    files = ctc_tokenizer_files(tokenizer) if tokenizer is not None else {}
    save_hf_dir(out, config, state_to_hf(model))
    write_json_files(files, out)
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n",
                                                  encoding="utf-8")
    return config["model_type"]
