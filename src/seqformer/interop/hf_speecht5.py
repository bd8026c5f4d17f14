"""Hugging Face ``SpeechT5ForTextToSpeech`` <-> seqformer's ``SpeechT5TTS``, both ways.

The layouts match one to one (``models/speecht5.py``): the text prenet's ``embed_tokens`` and
``encode_positions.alpha``; the wrapped encoder's input ``layer_norm``, relative table
``embed_positions.pe_k`` and post-LN layers (``attention``, ``layer_norm``, ``feed_forward``
``intermediate_dense`` / ``output_dense``, ``final_layer_norm``); the speech prenet
(``layers``, ``final_layer``, ``encode_positions.alpha``, ``speaker_embeds_layer``); the
wrapped decoder's post-LN layers (``self_attn``, ``encoder_attn`` and their norms); the postnet
(``feat_out``, ``prob_out``, ``layers.i.conv`` / ``batch_norm``). The sinusoid tables are not
in either checkpoint: both rebuild them.

HF fields without a seqformer counterpart are refused when they would change the outputs
(different encoder/decoder heads or FFN widths, ``scale_embedding``); the speech-encoder fields
(feature extractor, SpecAugment) belong to SpeechT5's other heads and are ignored. Layer drop
is a training regulariser seqformer does not have: imported as nothing, exported as 0.

The tokenizer: SpeechT5Tokenizer is a SentencePiece character model (``spm_char.model``)
whose piece ids *are* the token ids, plus ``<ctc_blank>`` after them, and it appends ``</s>``
to every input. :func:`speecht5_tokenizer` wraps it as ``hf_tokenizers``'
``SentencePieceTokenizer`` with a vocabulary read from the model itself and ``append_eos``;
SpeechT5Tokenizer's optional number normalisation (``normalize=True``) is not reproduced.
Export writes no tokenizer: a trained model's ids are seqformer's own tokenizer's (the run's
``tokenizer/``). The target-spectrogram settings travel both ways between config.json's
``features`` (``data/tts_mel.py``) and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.speecht5 import SpeechT5TTS, SpeechT5TTSConfig

MODEL_TYPE = "speecht5"
# HF activation names -> ours (nn/feedforward.py); the inverse is used on export.
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}
_ACTIVATIONS_OUT = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh",
                    "silu": "silu"}
_ENCODER_LAYER = {
    "attention.q_proj": "self_attn.q_proj",
    "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj",
    "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "attn_block.norm",
    "feed_forward.intermediate_dense": "ffn.linear1",
    "feed_forward.output_dense": "ffn.linear2",
    "final_layer_norm": "ffn_block.norm",
}
_DECODER_LAYER = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_layer_norm": "self_block.norm",
    "encoder_attn.q_proj": "cross_attn.q_proj",
    "encoder_attn.k_proj": "cross_attn.k_proj",
    "encoder_attn.v_proj": "cross_attn.v_proj",
    "encoder_attn.out_proj": "cross_attn.out_proj",
    "encoder_attn_layer_norm": "cross_block.norm",
    "feed_forward.intermediate_dense": "ffn.linear1",
    "feed_forward.output_dense": "ffn.linear2",
    "final_layer_norm": "ffn_block.norm",
}
_ENC = "speecht5.encoder."
_DEC = "speecht5.decoder."
_FIXED = {
    f"{_ENC}prenet.embed_tokens.weight": "embed_tokens.weight",
    f"{_ENC}prenet.encode_positions.alpha": "text_positions.alpha",
    f"{_ENC}wrapped_encoder.layer_norm.weight": "encoder.norm.weight",
    f"{_ENC}wrapped_encoder.layer_norm.bias": "encoder.norm.bias",
    f"{_ENC}wrapped_encoder.embed_positions.pe_k.weight": "encoder.relative.weight",
    f"{_DEC}prenet.final_layer.weight": "prenet.final.weight",
    f"{_DEC}prenet.final_layer.bias": "prenet.final.bias",
    f"{_DEC}prenet.encode_positions.alpha": "prenet.positions.alpha",
    f"{_DEC}prenet.speaker_embeds_layer.weight": "prenet.speaker_proj.weight",
    f"{_DEC}prenet.speaker_embeds_layer.bias": "prenet.speaker_proj.bias",
    "speech_decoder_postnet.feat_out.weight": "postnet.feat_out.weight",
    "speech_decoder_postnet.feat_out.bias": "postnet.feat_out.bias",
    "speech_decoder_postnet.prob_out.weight": "postnet.prob_out.weight",
    "speech_decoder_postnet.prob_out.bias": "postnet.prob_out.bias",
}
_PATTERNS = (  # (HF regex, our template) for the numbered modules outside the layer tables
    (re.compile(r"^speecht5\.decoder\.prenet\.layers\.(\d+)\.(weight|bias)$"),
     "prenet.layers.{0}.{1}"),
    (re.compile(r"^speech_decoder_postnet\.layers\.(\d+)\.conv\.weight$"),
     "postnet.layers.{0}.conv.weight"),
    (re.compile(r"^speech_decoder_postnet\.layers\.(\d+)\.batch_norm\.(\w+)$"),
     "postnet.layers.{0}.norm.{1}"),
)
_LAYER = re.compile(r"^speecht5\.(encoder|decoder)\.wrapped_(?:encoder|decoder)\.layers\.(\d+)\."
                    r"(.+)\.(weight|bias)$")


def _getter(hf: Mapping[str, Any] | Any) -> Any:
    return hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json"
                   ) -> SpeechT5TTSConfig:
    """``SpeechT5TTSConfig`` from a HF SpeechT5 config (``config.json`` dict or object)."""
    get = _getter(hf)
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"),
                 ("encoder_ffn_dim", "decoder_ffn_dim")):
        if get(a, 12 if "heads" in a else 3072) != get(b, 12 if "heads" in b else 3072):
            raise CheckpointError(f"{where}: {a}={get(a)} differs from {b}={get(b)}; seqformer's "
                                  "SpeechT5 uses one value for both stacks")
    if get("scale_embedding", False):
        raise CheckpointError(f"{where}: scale_embedding=true (a text-decoder setting) is not "
                              "supported by the text-to-speech model")
    act = get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={act!r} has no seqformer counterpart; "
                              f"supported: {', '.join(_ACTIVATIONS)}")
    act = _ACTIVATIONS[act]
    try:
        return SpeechT5TTSConfig(
            vocab_size=get("vocab_size", 81), pad_id=get("pad_token_id", 1),
            bos_id=get("bos_token_id", 0), eos_id=get("eos_token_id", 2),
            d_model=get("hidden_size", 768), heads=get("encoder_attention_heads", 12),
            ffn_dim=get("encoder_ffn_dim", 3072), encoder_layers=get("encoder_layers", 12),
            decoder_layers=get("decoder_layers", 6), dropout=get("hidden_dropout", 0.1),
            attention_dropout=get("attention_dropout", 0.1),
            activation_dropout=get("activation_dropout", 0.1),
            positional_dropout=get("positional_dropout", 0.1), activation=act,
            layer_norm_eps=get("layer_norm_eps", 1e-5),
            encoder_max_relative_position=get("encoder_max_relative_position", 160),
            max_text_positions=get("max_text_positions", 450),
            max_speech_positions=get("max_speech_positions", 4000),
            num_mel_bins=get("num_mel_bins", 80), reduction_factor=get("reduction_factor", 2),
            prenet_layers=get("speech_decoder_prenet_layers", 2),
            prenet_units=get("speech_decoder_prenet_units", 256),
            prenet_dropout=get("speech_decoder_prenet_dropout", 0.5),
            speaker_embedding_dim=get("speaker_embedding_dim", 512),
            postnet_layers=get("speech_decoder_postnet_layers", 5),
            postnet_units=get("speech_decoder_postnet_units", 256),
            postnet_kernel=get("speech_decoder_postnet_kernel", 5),
            postnet_dropout=get("speech_decoder_postnet_dropout", 0.5),
            guided_attention_loss=bool(get("use_guided_attention_loss", True)),
            guided_attention_heads=get("guided_attention_loss_num_heads", 2),
            guided_attention_sigma=get("guided_attention_loss_sigma", 0.4),
            guided_attention_scale=get("guided_attention_loss_scale", 10.0))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def state_from_hf(hf: Mapping[str, Tensor], config: SpeechT5TTSConfig | None = None,
                  where: str = ".") -> dict[str, Tensor]:
    """Rename a ``SpeechT5ForTextToSpeech`` state dict to :class:`SpeechT5TTS` names. An
    unknown name is a CheckpointError naming it: a skipped weight would silently stay random."""
    out: dict[str, Tensor] = {}
    for name, tensor in hf.items():
        if name in _FIXED:
            out[_FIXED[name]] = tensor
            continue
        if (m := _LAYER.match(name)) and m.group(3) in (
                _ENCODER_LAYER if m.group(1) == "encoder" else _DECODER_LAYER):
            stack, index, inner, kind = m.groups()
            table = _ENCODER_LAYER if stack == "encoder" else _DECODER_LAYER
            out[f"{stack}.layers.{index}.{table[inner]}.{kind}"] = tensor
            continue
        for pattern, template in _PATTERNS:
            if m := pattern.match(name):
                out[template.format(*m.groups())] = tensor
                break
        else:
            raise CheckpointError(f"{where}: Hugging Face SpeechT5 weight {name!r} has no "
                                  "seqformer counterpart; only SpeechT5ForTextToSpeech is "
                                  "supported")
    return out


def state_to_hf(model: SpeechT5TTS) -> dict[str, Tensor]:
    """Our state dict under ``SpeechT5ForTextToSpeech`` names (inverse of
    :func:`state_from_hf`)."""
    fixed = {ours: theirs for theirs, ours in _FIXED.items()}
    tables = {"encoder": {o: t for t, o in _ENCODER_LAYER.items()},
              "decoder": {o: t for t, o in _DECODER_LAYER.items()}}
    ours_layer = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    numbered = (
        (re.compile(r"^prenet\.layers\.(\d+)\.(weight|bias)$"),
         _DEC + "prenet.layers.{0}.{1}"),
        (re.compile(r"^postnet\.layers\.(\d+)\.conv\.weight$"),
         "speech_decoder_postnet.layers.{0}.conv.weight"),
        (re.compile(r"^postnet\.layers\.(\d+)\.norm\.(\w+)$"),
         "speech_decoder_postnet.layers.{0}.batch_norm.{1}"),
    )
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if name in fixed:
            out[fixed[name]] = tensor
            continue
        if (m := ours_layer.match(name)) and m.group(3) in tables[m.group(1)]:
            stack, index, inner, kind = m.groups()
            out[f"speecht5.{stack}.wrapped_{stack}.layers.{index}.{tables[stack][inner]}."
                f"{kind}"] = tensor
            continue
        for pattern, template in numbered:
            if m := pattern.match(name):
                out[template.format(*m.groups())] = tensor
                break
        else:
            raise CheckpointError(f"SpeechT5 weight {name!r} has no Hugging Face counterpart")
    return out


def config_to_hf(model: SpeechT5TTS) -> dict[str, Any]:
    """A ``SpeechT5ForTextToSpeech`` ``config.json`` for ``model`` (inverse of
    :func:`config_from_hf`). ``pad_token_id`` is the model's pad id: HF's ``generate_speech``
    masks the encoder input where it sees it. ``speaker_embedding_dim`` 0 is written as 0
    (HF then builds its speaker layer d_model -> d_model, our unused ``speaker_proj``), but
    HF's ``generate_speech`` refuses to run without speaker embeddings: use ``forward``."""
    c = model.config
    return {
        "architectures": ["SpeechT5ForTextToSpeech"], "model_type": MODEL_TYPE,
        "is_encoder_decoder": True, "vocab_size": c.vocab_size, "hidden_size": c.d_model,
        "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.heads, "decoder_attention_heads": c.heads,
        "encoder_ffn_dim": c.ffn_dim, "decoder_ffn_dim": c.ffn_dim,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "hidden_act": _ACTIVATIONS_OUT[c.activation],
        "hidden_dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout, "positional_dropout": c.positional_dropout,
        "layer_norm_eps": c.layer_norm_eps, "scale_embedding": False,
        "pad_token_id": c.pad_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.eos_id, "num_mel_bins": c.num_mel_bins,
        "reduction_factor": c.reduction_factor,
        "speech_decoder_prenet_layers": c.prenet_layers,
        "speech_decoder_prenet_units": c.prenet_units,
        "speech_decoder_prenet_dropout": c.prenet_dropout,
        "speaker_embedding_dim": c.speaker_embedding_dim,
        "speech_decoder_postnet_layers": c.postnet_layers,
        "speech_decoder_postnet_units": c.postnet_units,
        "speech_decoder_postnet_kernel": c.postnet_kernel,
        "speech_decoder_postnet_dropout": c.postnet_dropout,
        "max_speech_positions": c.max_speech_positions,
        "max_text_positions": c.max_text_positions,
        "encoder_max_relative_position": c.encoder_max_relative_position,
        "use_guided_attention_loss": c.guided_attention_loss,
        "guided_attention_loss_num_heads": c.guided_attention_heads,
        "guided_attention_loss_sigma": c.guided_attention_sigma,
        "guided_attention_loss_scale": c.guided_attention_scale,
        "apply_spec_augment": False, "use_cache": True,
    }


# -- directories ----------------------------------------------------------------------------------
def load(directory: str | Path, trust_pickle: bool = False) -> SpeechT5TTS:
    """The ``SpeechT5ForTextToSpeech`` in the local directory ``directory`` as ours. A
    SpeechT5 of another head (speech-to-text, speech-to-speech) is refused by name."""
    from seqformer.interop.hf_io import load_checkpoint, read_hf_config

    archs = read_hf_config(directory).get("architectures") or []
    if archs and "SpeechT5ForTextToSpeech" not in archs:
        raise CheckpointError(f"{Path(directory) / 'config.json'}: a {archs[0]}, not "
                              "SpeechT5ForTextToSpeech; only the text-to-speech head imports")
    return load_checkpoint(directory, MODEL_TYPE, SpeechT5TTS, config_from_hf, state_from_hf,
                           trust_pickle)


def speecht5_tokenizer(directory: str | Path, config: SpeechT5TTSConfig) -> Any | None:
    """SpeechT5Tokenizer's ``spm_char.model`` as a ``SentencePieceTokenizer`` (piece ids are
    token ids; ``<ctc_blank>`` follows them; ``</s>`` appended to each input, as
    SpeechT5Tokenizer does); None when the directory has no ``spm_char.model``."""
    from seqformer.interop.hf_tokenizers import SentencePieceTokenizer

    spm_path = Path(directory) / "spm_char.model"
    if not spm_path.is_file():
        return None
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError(f"{spm_path}: reading SpeechT5's tokenizer needs the sentencepiece "
                          "package: pip install sentencepiece") from None

    spm = sentencepiece.SentencePieceProcessor()
    try:
        spm.Load(str(spm_path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{spm_path}: unreadable SentencePiece model ({exc}); restore "
                              "it or remove it to import the weights only") from None
    vocab = {spm.IdToPiece(i): i for i in range(spm.GetPieceSize())}
    vocab.setdefault("<ctc_blank>", spm.GetPieceSize())
    if max(vocab.values()) >= config.vocab_size:
        raise CheckpointError(f"{spm_path}: {len(vocab)} pieces for vocab_size="
                              f"{config.vocab_size} in config.json; the files do not belong "
                              "together")
    unk = spm.unk_id() if spm.unk_id() >= 0 else config.pad_id
    ids = {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id, "unk": unk}
    return SentencePieceTokenizer(spm_path, vocab, ids, append_eos=True)


def features_from_hf(directory: str | Path, config: SpeechT5TTSConfig) -> dict[str, Any]:
    """Our target-spectrogram settings (``data/tts_mel.py``) from ``preprocessor_config.json``
    (SpeechT5FeatureExtractor) when there is one, SpeechT5's defaults otherwise; their mel
    bins must be the model's."""
    from seqformer.data.tts_mel import TTSMel

    path = Path(directory) / "preprocessor_config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
        try:
            features = TTSMel.from_hf(data, str(path))
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
    else:
        features = TTSMel(num_mel_bins=config.num_mel_bins)
    if features.num_mel_bins != config.num_mel_bins:
        raise CheckpointError(f"{path}: num_mel_bins={features.num_mel_bins} but the model "
                              f"predicts {config.num_mel_bins}; the files do not belong together")
    return features.to_dict()


def import_speecht5(src_dir: str | Path, out_dir: str | Path,
                    trust_pickle: bool = False) -> str:
    """Write the HF ``SpeechT5ForTextToSpeech`` directory ``src_dir`` as a seqformer model
    directory ``out_dir``: ``config.json`` with ``family: speecht5-tts`` and ``features``
    (:func:`features_from_hf`), the weights, and ``tokenizer/`` when the checkpoint has
    ``spm_char.model``. Returns the family."""
    model = load(src_dir, trust_pickle)
    features = features_from_hf(src_dir, model.config)
    tokenizer = speecht5_tokenizer(src_dir, model.config)
    model.save(out_dir, features)
    if tokenizer is not None:
        tokenizer.save(Path(out_dir) / "tokenizer")
    return model.family


def features_to_hf(features: Mapping[str, Any] | None, config: SpeechT5TTSConfig
                   ) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``SpeechT5FeatureExtractor`` computing the model's
    target spectrogram (``features`` from config.json; SpeechT5's defaults when absent)."""
    from seqformer.data.tts_mel import TTSMel

    mel = TTSMel.from_dict(dict(features)) if features else TTSMel(
        num_mel_bins=config.num_mel_bins)
    if mel.num_mel_bins != config.num_mel_bins:
        raise ConfigError(f"features.num_mel_bins={mel.num_mel_bins} does not match "
                          f"model.num_mel_bins={config.num_mel_bins}")
    return {"feature_extractor_type": "SpeechT5FeatureExtractor", "processor_class":
            "SpeechT5Processor", "feature_size": 1, "padding_value": 0.0,
            "padding_side": "right", "do_normalize": False, "return_attention_mask": True,
            **mel.to_hf()}


def export_speecht5(model_dir: str | Path, out_dir: str | Path) -> str:
    """Write the seqformer model directory ``model_dir`` (family speecht5-tts) as a directory
    ``SpeechT5ForTextToSpeech.from_pretrained`` loads (``config.json``, ``model.safetensors``,
    ``generation_config.json``) and ``SpeechT5FeatureExtractor.from_pretrained`` reads
    (``preprocessor_config.json``). No tokenizer (see the module docstring). Returns the
    model_type."""
    from seqformer.interop.hf_io import save_hf_dir

    model = SpeechT5TTS.load(model_dir)
    processor = features_to_hf(SpeechT5TTS.read_config(model_dir).get("features"),
                               model.config)
    save_hf_dir(out_dir, config_to_hf(model), state_to_hf(model))
    (Path(out_dir) / "preprocessor_config.json").write_text(json.dumps(processor, indent=2)
                                                            + "\n", encoding="utf-8")
    generation = {"pad_token_id": model.pad_id, "bos_token_id": model.bos_id,
                  "eos_token_id": model.eos_id, "decoder_start_token_id": model.eos_id}
    (Path(out_dir) / "generation_config.json").write_text(json.dumps(generation, indent=2)
                                                          + "\n", encoding="utf-8")
    return MODEL_TYPE


# ``hf.py``'s registry names these import_dir / export_dir for every architecture.
import_dir = import_speecht5
export_dir = export_speecht5
