"""Hugging Face Whisper (``WhisperForConditionalGeneration``) -> seqformer Whisper.

The layouts match one to one (see ``models/whisper.py``): HF's ``self_attn_layer_norm`` /
``encoder_attn_layer_norm`` / ``final_layer_norm`` are the pre-LN residual blocks' norms,
``fc1`` / ``fc2`` the FeedForward, ``encoder_attn`` the cross-attention, ``embed_positions`` the
encoder's sinusoid table and the decoder's learned positions, ``proj_out`` the output projection
tied to ``embed_tokens`` (an untied one is refused: ours is always tied). The tokenizer is
Whisper's byte-level BPE (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) with the
checkpoint's special ids: pad = eos = <|endoftext|>, decoding starts from
<|startoftranscript|>. Nothing is downloaded.

Export (:func:`export_dir`, ``seqformer export``) is the inverse, for ``encoder_block:
transformer`` models (HF has no Conformer Whisper): ``config.json``, ``model.safetensors``
(``proj_out`` left out, as ``save_pretrained`` leaves a tied weight out),
``generation_config.json`` and ``preprocessor_config.json`` (:func:`features_to_hf`). The
special ids are the model's own -- for a trained model seqformer's pad 0 / bos 1 / eos 2:
``decoder_start_token_id`` = bos, ``eos_token_id`` = eos, ``pad_token_id`` = pad, and the
generation config suppresses pad and bos (our search never emits them), forces eos at the last
position and allows ``max_target_positions - 1`` new tokens, so a plain ``generate(
input_features=...)`` is our greedy search. No language, task or timestamp tokens exist. Our
character tokenizer is *not* exported as a Whisper tokenizer (Whisper's is byte-level BPE with
its own special tokens): map ids to text with ``tokenizer/`` of the run (seqformer's
``load_tokenizer``). HF's encoder takes exactly ``2 * max_source_positions`` frames and masks
nothing, so pad the features to that length (the feature extractor does, see
:func:`features_to_hf`); ours masks padding, so the two agree exactly only on full-length input.

Running an imported checkpoint the way it was trained (:func:`import_dir`): a real Whisper only
ever saw 30 s windows and a prompt, so its ``config.json`` gets ``features.pad_to_frames`` =
``2 * max_source_positions`` (the waveform zero-padded to 30 s before the log-mel, as
``WhisperFeatureExtractor`` does) and a ``generation`` entry copied from
``generation_config.json`` (``decoder_start_token_id``, ``lang_to_id``, ``task_to_id``,
``no_timestamps_token_id``, ``forced_decoder_ids``, ``suppress_tokens``,
``begin_suppress_tokens``, ``is_multilingual``, ``language``, ``task``). :class:`WhisperPrompt`
turns it into what ``generate()`` does for short-form audio without timestamps: the prompt
<|startoftranscript|> <|lang|> <|task|> <|notimestamps|> (the language detected per utterance
when none is given, as HF does), ``suppress_tokens`` at every generated step and
``begin_suppress_tokens`` at the first; the transcript is the ids below the first special id.
A directory our own export wrote (its config carries a ``seqformer`` entry) imports without
either, so a trained model round-trips unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.whisper import Whisper, WhisperConfig

_ENCODER_LAYER = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_layer_norm": "attn_block.norm",
    "fc1": "ffn.linear1",
    "fc2": "ffn.linear2",
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
    "fc1": "ffn.linear1",
    "fc2": "ffn.linear2",
    "final_layer_norm": "ffn_block.norm",
}
_FIXED = {
    "model.encoder.conv1.weight": "conv1.weight",
    "model.encoder.conv1.bias": "conv1.bias",
    "model.encoder.conv2.weight": "conv2.weight",
    "model.encoder.conv2.bias": "conv2.bias",
    "model.encoder.embed_positions.weight": "encoder_positions",
    "model.encoder.layer_norm.weight": "encoder.norm.weight",
    "model.encoder.layer_norm.bias": "encoder.norm.bias",
    "model.decoder.embed_tokens.weight": "embed_tokens.weight",
    "model.decoder.embed_positions.weight": "decoder_positions.embedding.weight",
    "model.decoder.layer_norm.weight": "decoder.norm.weight",
    "model.decoder.layer_norm.bias": "decoder.norm.bias",
}
_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def config_from_hf(hf: Mapping[str, Any] | Any, where: str = "config.json") -> WhisperConfig:
    """``WhisperConfig`` from a HF Whisper config (``config.json`` dict or config object)."""
    get = hf.get if isinstance(hf, Mapping) else (lambda k, d=None: getattr(hf, k, d))
    if get("activation_function", "gelu") != "gelu":
        raise CheckpointError(f"{where}: activation_function={get('activation_function')!r}; "
                              "only exact 'gelu' Whispers map onto seqformer's blocks")
    if get("scale_embedding", False):
        raise CheckpointError(f"{where}: scale_embedding=true is not Whisper's layout")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"),
                 ("encoder_ffn_dim", "decoder_ffn_dim")):
        if get(a) != get(b):
            raise CheckpointError(f"{where}: {a}={get(a)} differs from {b}={get(b)}; seqformer's "
                                  "Whisper uses one value for both stacks")
    eos = get("eos_token_id", 50257)
    pad = get("pad_token_id")
    ours = get("seqformer") or {}  # what our export writes that HF has no field for
    return WhisperConfig(
        label_smoothing=float(ours.get("label_smoothing", 0.1)),
        vocab_size=get("vocab_size", 51865), num_mel_bins=get("num_mel_bins", 80),
        d_model=get("d_model", 384), heads=get("encoder_attention_heads", 6),
        encoder_layers=get("encoder_layers", 4), decoder_layers=get("decoder_layers", 4),
        ffn_dim=get("encoder_ffn_dim", 1536),
        max_source_positions=get("max_source_positions", 1500),
        max_target_positions=get("max_target_positions", 448),
        dropout=get("dropout", 0.0) or 0.0, attention_dropout=get("attention_dropout", 0.0) or 0.0,
        pad_id=eos if pad is None else pad,
        bos_id=get("decoder_start_token_id", 50258), eos_id=eos)


def state_from_hf(hf: Mapping[str, Tensor], config: WhisperConfig | None = None,
                  where: str = ".") -> dict[str, Tensor]:
    """Rename a ``WhisperForConditionalGeneration`` state dict to :class:`Whisper` names. An
    unknown name is a CheckpointError naming it: a skipped weight would silently stay random."""
    out: dict[str, Tensor] = {}
    proj_out = None
    for name, tensor in hf.items():
        if name == "proj_out.weight":
            proj_out = tensor
        elif name in _FIXED:
            out[_FIXED[name]] = tensor
        elif (m := _LAYER.match(name)) and m.group(3) in (
                _ENCODER_LAYER if m.group(1) == "encoder" else _DECODER_LAYER):
            stack, index, inner, kind = m.groups()
            table = _ENCODER_LAYER if stack == "encoder" else _DECODER_LAYER
            out[f"{stack}.layers.{index}.{table[inner]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"{where}: Hugging Face Whisper weight {name!r} has no "
                                  "seqformer counterpart; only WhisperForConditionalGeneration "
                                  "is supported")
    embed = out.get("embed_tokens.weight")
    if embed is None:
        raise CheckpointError(f"{where}: no model.decoder.embed_tokens.weight; not a Whisper "
                              "checkpoint")
    if proj_out is not None and not proj_out.equal(embed):
        raise CheckpointError(f"{where}: proj_out is not tied to embed_tokens; seqformer's "
                              "Whisper ties them")
    out["output.weight"] = embed
    return out


def special_ids(config: WhisperConfig) -> dict[str, int]:
    """Whisper's BPE has no unknown token (byte-level); <|endoftext|> stands in, as for GPT-2."""
    return {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id,
            "unk": config.eos_id}


def load(directory: str | Path, trust_pickle: bool = False) -> Whisper:
    """The ``WhisperForConditionalGeneration`` in the local directory ``directory`` as ours."""
    from seqformer.interop.hf_io import load_checkpoint

    return load_checkpoint(directory, "whisper", Whisper, config_from_hf, state_from_hf,
                           trust_pickle)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the checkpoint as a dict; None when absent (a CheckpointError when
    broken: silently falling back to defaults would transcribe differently)."""
    import json

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); restore or remove it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object; restore or remove it")
    return data


def features_from_hf(directory: str | Path, pad_to_frames: int = 0) -> dict[str, Any]:
    """Our log-mel settings from ``preprocessor_config.json`` (WhisperFeatureExtractor) when
    there is one; Whisper's defaults otherwise. ``pad_to_frames``: see ``data/logmel.py``."""
    from seqformer.data.logmel import LogMel

    hf = _read_json(Path(directory) / "preprocessor_config.json")
    if hf is None:
        return LogMel(pad_to_frames=pad_to_frames).to_dict()
    return LogMel(n_mels=int(hf.get("feature_size", 80)), n_fft=int(hf.get("n_fft", 400)),
                  hop_length=int(hf.get("hop_length", 160)),
                  sample_rate=int(hf.get("sampling_rate", 16000)),
                  pad_to_frames=pad_to_frames).to_dict()


# generation_config.json fields an imported Whisper's transcription follows (WhisperPrompt).
GENERATION_FIELDS = ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id",
                     "lang_to_id", "task_to_id", "is_multilingual", "forced_decoder_ids",
                     "suppress_tokens", "begin_suppress_tokens", "language", "task")


def generation_from_hf(directory: str | Path, hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`GENERATION_FIELDS` of ``generation_config.json``, or of ``config.json`` for
    checkpoints older than generation configs (where transformers reads them too)."""
    source = _read_json(Path(directory) / "generation_config.json") or hf_config
    out = {k: source[k] for k in GENERATION_FIELDS if source.get(k) is not None}
    out.setdefault("decoder_start_token_id", hf_config.get("decoder_start_token_id", 50258))
    out.setdefault("eos_token_id", hf_config.get("eos_token_id", 50257))
    WhisperPrompt.from_dict(out, str(Path(directory) / "generation_config.json"))  # checked now
    return out


def import_dir(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Write the HF Whisper directory ``src`` as a seqformer model directory ``out``
    (``config.json`` with ``family: whisper``, ``features`` and, for a real Whisper,
    ``generation``; the weights; ``tokenizer/`` when the checkpoint has one). A real Whisper
    gets 30 s padding and its prompt (module docstring); a directory our export wrote does not
    (it never saw either)."""
    from seqformer.interop.hf_io import read_hf_config
    from seqformer.interop.hf_tokenizers import gpt2_tokenizer
    from seqformer.models.common import save_model_dir
    from seqformer.models.whisper import GENERATION_KEY

    model = load(src, trust_pickle)
    hf_config = read_hf_config(src)
    exported = hf_config.get("seqformer") or {}
    if exported and not exported.get("whisper_window"):  # a trained run: unpadded, no prompt
        model.save(out, features_from_hf(src))
    else:
        data = model.config_json(features_from_hf(src, model.config.max_frames))
        data[GENERATION_KEY] = generation_from_hf(src, hf_config)
        save_model_dir(model, data, out)
    tokenizer = gpt2_tokenizer(src, special_ids(model.config))
    if tokenizer is not None:
        tokenizer.save(Path(out) / "tokenizer")
    return "whisper"


class WhisperPrompt:
    """What ``WhisperForConditionalGeneration.generate`` does around the model for short-form
    audio without timestamps, from an imported checkpoint's ``generation`` settings:

    - :meth:`template`: the decoder prompt. <|startoftranscript|>; then, when neither a language
      nor a task is asked for, the consecutive ``forced_decoder_ids`` of positions 1, 2, ...
      (the old way checkpoints name a task); the language token (``None`` in the template when
      it is to be detected: multilingual models, no language given); the task token (asked
      for, or <|transcribe|> when a language was given and no task is in the prompt);
      <|notimestamps|>. Timestamps are not supported, so it always ends the prompt.
    - :attr:`language_ids`: the candidates of detection, which takes the most likely of them
      after <|startoftranscript|> alone, per utterance;
    - :attr:`suppress` (every generated step) and :attr:`begin_suppress` (the first one);
    - :attr:`text_below`: ids from the lowest special id up (<|endoftext|>, the prompt
      tokens, timestamps) are not text, which is how Whisper vocabularies are laid out.

    Languages are accepted as codes (``en``), tokens (``<|en|>``) or, where transformers is
    installed, English names (``english``); tasks as ``transcribe`` / ``translate``."""

    def __init__(self, data: Mapping[str, Any], where: str = "config.json: generation") -> None:
        def ids(name: str) -> list[int]:
            value = data.get(name) or []
            if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
                raise CheckpointError(f"{where}.{name} must be a list of token ids")
            return [int(i) for i in value]

        def table(name: str) -> dict[str, int]:
            value = data.get(name) or {}
            if not isinstance(value, dict) or not all(isinstance(i, int)
                                                      for i in value.values()):
                raise CheckpointError(f"{where}.{name} must map names to token ids")
            return {str(k): int(v) for k, v in value.items()}

        self.where = where
        self.start = int(data.get("decoder_start_token_id", 50258))
        self.eos = int(data.get("eos_token_id", 50257))
        self.lang_to_id, self.task_to_id = table("lang_to_id"), table("task_to_id")
        no_ts = data.get("no_timestamps_token_id")
        self.no_timestamps = None if no_ts is None else int(no_ts)
        self.multilingual = bool(data.get("is_multilingual", bool(self.lang_to_id)))
        forced = data.get("forced_decoder_ids") or []
        if not isinstance(forced, list) or not all(
                isinstance(f, list | tuple) and len(f) == 2 and isinstance(f[0], int)
                and (f[1] is None or isinstance(f[1], int)) for f in forced):
            raise CheckpointError(f"{where}.forced_decoder_ids must be [position, id or null] "
                                  "pairs")
        self.forced = [(int(p), None if t is None else int(t)) for p, t in forced]
        self.suppress, self.begin_suppress = ids("suppress_tokens"), ids("begin_suppress_tokens")
        self.language, self.task = data.get("language"), data.get("task")
        specials = [self.start, self.eos, *self.lang_to_id.values(), *self.task_to_id.values()]
        if self.no_timestamps is not None:
            specials.append(self.no_timestamps)
        self.text_below = min(specials)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "config.json: generation"
                  ) -> WhisperPrompt | None:
        """None for a model without generation settings (a trained one)."""
        return None if not data else cls(data, where)

    @property
    def language_ids(self) -> list[int]:
        return sorted(set(self.lang_to_id.values()))

    def language_id(self, language: str) -> int:
        """The token of ``language`` (code, token or English name); a ConfigError listing
        the model's codes otherwise."""
        name = language.strip().lower()
        if name in self.lang_to_id:
            return self.lang_to_id[name]
        if f"<|{name}|>" in self.lang_to_id:
            return self.lang_to_id[f"<|{name}|>"]
        try:
            from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE
        except ImportError:
            TO_LANGUAGE_CODE = {}
        code = TO_LANGUAGE_CODE.get(name)
        if code is not None and f"<|{code}|>" in self.lang_to_id:
            return self.lang_to_id[f"<|{code}|>"]
        codes = ", ".join(sorted(k.strip("<|>") for k in self.lang_to_id))
        raise ConfigError(f"language {language!r} is not one this Whisper knows; give one of "
                          f"its codes: {codes}")

    def template(self, language: str | None = None, task: str | None = None
                 ) -> list[int | None]:
        """The prompt (start token first); a ``None`` marks the language to detect. Explicit
        ``language`` / ``task`` win over the checkpoint's own defaults."""
        language = language if language is not None else self.language
        task = task if task is not None else self.task
        if not self.multilingual and (language is not None or task is not None):
            raise ConfigError("this Whisper is English-only: it takes no language or task")
        prompt: list[int | None] = [self.start]
        if language is None and task is None and self.forced and self.forced[0][0] == 1:
            for i, (position, token) in enumerate(self.forced, start=1):
                if position != i:
                    raise CheckpointError(f"{self.where}.forced_decoder_ids: position "
                                          f"{position} does not follow {i - 1}; Whisper's "
                                          "prompt takes consecutive positions from 1")
                prompt.append(token)
        undefined = len(prompt) <= 1 or prompt[1] is None
        if language is not None:
            if not self.lang_to_id:
                raise ConfigError("this Whisper's generation config has no lang_to_id; it "
                                  "takes no language")
            lang = self.language_id(language)
            if len(prompt) > 1:
                prompt[1] = lang
            else:
                prompt.append(lang)
        elif self.lang_to_id and undefined:  # detect it
            if len(prompt) <= 1:
                prompt.append(None)
        else:
            prompt = [t for t in prompt if t is not None]
        if task is not None:
            if task not in ("transcribe", "translate") or task not in self.task_to_id:
                raise ConfigError(f"task {task!r}: this Whisper knows "
                                  f"{sorted(self.task_to_id) or 'no tasks'}")
            prompt.append(self.task_to_id[task])
        elif language is not None and "transcribe" in self.task_to_id:
            if not any(t in prompt for t in self.task_to_id.values()):
                prompt.append(self.task_to_id["transcribe"])
        if self.no_timestamps is not None and prompt[-1] != self.no_timestamps:
            prompt.append(self.no_timestamps)
        return prompt

    def text_ids(self, ids: list[int]) -> list[int]:
        """The transcript's ids: everything special (timestamps included) dropped."""
        return [i for i in ids if i < self.text_below]


# -- export: seqformer Whisper -> WhisperForConditionalGeneration --------------------------------

def config_to_hf(model: Whisper) -> dict[str, Any]:
    """A ``WhisperForConditionalGeneration`` ``config.json`` for ``model`` (the inverse of
    :func:`config_from_hf`; ``label_smoothing``, a training setting HF has no field for, goes
    into a ``seqformer`` entry, which transformers keeps). A Conformer encoder is refused."""
    c = model.config
    if c.encoder_block != "transformer":
        raise ConfigError(f"model.encoder_block={c.encoder_block!r}: Hugging Face Whisper has "
                          "no Conformer encoder, so only encoder_block: transformer exports")
    if c.activation != "gelu":
        raise ConfigError(f"model.activation={c.activation!r}: Hugging Face Whisper export "
                          "(and import) supports only exact 'gelu'")
    return {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "vocab_size": c.vocab_size, "num_mel_bins": c.num_mel_bins, "d_model": c.d_model,
        "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.heads, "decoder_attention_heads": c.heads,
        "encoder_ffn_dim": c.ffn_dim, "decoder_ffn_dim": c.ffn_dim,
        "max_source_positions": c.max_source_positions,
        "max_target_positions": c.max_target_positions, "activation_function": "gelu",
        "dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": c.dropout, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "scale_embedding": False, "tie_word_embeddings": True, "use_cache": True,
        "is_encoder_decoder": True, "apply_spec_augment": False,
        "pad_token_id": c.pad_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id, "suppress_tokens": None,
        "begin_suppress_tokens": None,
        "seqformer": {"label_smoothing": c.label_smoothing},
    }


def generation_config_to_hf(model: Whisper) -> dict[str, Any]:
    """``generation_config.json`` making ``generate`` our greedy search: start from bos, stop at
    eos, never emit pad or bos (``restrict`` in decoding/search.py), eos forced at the last of
    ``max_target_positions - 1`` new tokens, our limit (Whisper's generate adds the start token
    to ``max_length``, capped at ``max_target_positions``). Beam settings are left to the
    caller."""
    c = model.config
    return {
        "decoder_start_token_id": c.bos_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
        "pad_token_id": c.pad_id, "forced_eos_token_id": c.eos_id,
        "suppress_tokens": sorted({c.pad_id, c.bos_id} - {c.eos_id}),
        "begin_suppress_tokens": None, "max_length": c.max_target_positions - 1,
        "do_sample": False, "num_beams": 1, "return_timestamps": False,
    }


def state_to_hf(model: Whisper) -> dict[str, Tensor]:
    """Our state dict under ``WhisperForConditionalGeneration`` names (the inverse of
    :func:`state_from_hf`); the tied output projection is written once, as
    ``embed_tokens``."""
    fixed = {ours: theirs for theirs, ours in _FIXED.items()}
    tables = {"encoder": {o: t for t, o in _ENCODER_LAYER.items()},
              "decoder": {o: t for t, o in _DECODER_LAYER.items()}}
    ours_layer = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if name == "output.weight":
            continue  # tied to embed_tokens
        if name in fixed:
            out[fixed[name]] = tensor
        elif (m := ours_layer.match(name)) and m.group(3) in tables[m.group(1)]:
            stack, index, inner, kind = m.groups()
            out[f"model.{stack}.layers.{index}.{tables[stack][inner]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"Whisper weight {name!r} has no Hugging Face counterpart")
    return out


def features_to_hf(features: Mapping[str, Any] | None, model: Whisper) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``WhisperFeatureExtractor`` computing our ``features``
    (the inverse of :func:`features_from_hf`): ``feature_size`` = n_mels, ``n_fft``,
    ``hop_length``, ``sampling_rate`` map one to one. ``chunk_length`` (seconds the extractor
    pads or cuts every input to) is set to ``2 * max_source_positions`` frames' worth, the
    exact input length HF's encoder accepts. Refused where the extractor would compute other
    features: its mel filters always end at 8 kHz, so ``min(f_max, sample_rate / 2)`` must be
    8000. A non-integral ``chunk_length`` is written as a float (transformers computes
    ``n_samples`` from it); pass ``max_length=2 * max_source_positions * hop_length`` samples
    to the extractor if your version insists on an integer."""
    from seqformer.data.logmel import LogMel

    c = model.config
    mel = LogMel.from_dict(dict(features)) if features else LogMel(n_mels=c.num_mel_bins)
    if mel.n_mels != c.num_mel_bins:
        raise ConfigError(f"features.n_mels={mel.n_mels} does not match "
                          f"model.num_mel_bins={c.num_mel_bins}")
    if min(mel.f_max, mel.sample_rate / 2) != 8000.0:
        raise ConfigError(f"features: mel filters up to {min(mel.f_max, mel.sample_rate / 2)} "
                          "Hz; WhisperFeatureExtractor's always end at 8000 Hz, so its features "
                          "would differ")
    samples = c.max_frames * mel.hop_length
    chunk = (samples // mel.sample_rate if samples % mel.sample_rate == 0
             else samples / mel.sample_rate)
    return {
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": mel.n_mels,
        "sampling_rate": mel.sample_rate, "hop_length": mel.hop_length, "n_fft": mel.n_fft,
        "chunk_length": chunk, "padding_value": 0.0, "padding_side": "right", "dither": 0.0,
        "return_attention_mask": False,
    }


def export_dir(model_dir: str | Path, out: str | Path) -> str:
    """Write the Whisper run ``model_dir`` as a Hugging Face directory ``out``: ``config.json``,
    ``model.safetensors`` and ``generation_config.json`` for
    ``WhisperForConditionalGeneration.from_pretrained``, ``preprocessor_config.json`` for
    ``WhisperFeatureExtractor.from_pretrained``. No tokenizer (see the module docstring).
    An imported Whisper's stored ``generation`` settings replace our greedy ones, and its
    config is marked ``seqformer.whisper_window`` so importing it again restores the 30 s
    padding and prompt. Returns the model_type written."""
    import json

    from seqformer.interop.hf_io import save_hf_dir
    from seqformer.models.whisper import GENERATION_KEY, read_whisper_config

    model_dir, out = Path(model_dir), Path(out)
    model = Whisper.load(model_dir)
    config = config_to_hf(model)  # refuses a Conformer before anything is written
    ours = read_whisper_config(model_dir)
    processor = features_to_hf(ours.get("features"), model)
    generation = generation_config_to_hf(model)
    stored = ours.get(GENERATION_KEY)
    if stored:  # an imported Whisper goes back with its own prompt and suppression
        generation = {k: v for k, v in generation.items()
                      if k not in ("forced_eos_token_id", "suppress_tokens")}
        generation.update(stored)
        generation["max_length"] = model.config.max_target_positions
        # Marks it as a real Whisper for import (only trained runs skip padding and prompt).
        config["seqformer"]["whisper_window"] = True
    save_hf_dir(out, config, state_to_hf(model))
    for name, data in (("generation_config.json", generation),
                       ("preprocessor_config.json", processor)):
        (out / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return "whisper"
