"""Recipes: one YAML file per task and model size, mapped one-to-one onto frozen dataclasses.

Sections: ``data`` (:class:`DataConfig`), ``tokenizer`` (:class:`TokenizerConfig`), ``model``
(:class:`~seqformer.models.seq2seq.Seq2SeqConfig`, vocab sizes filled in from the tokenizers),
``train`` (:class:`~seqformer.training.trainer.TrainConfig`) and ``decode``
(:class:`DecodeConfig`). Bundled recipes live in ``seqformer/recipes/`` and are found by name.

``task: lm`` (a decoder-only language model) has its own sections: ``data``
(:class:`LMDataConfig`), ``tokenizer`` (:class:`LMTokenizerConfig`), ``model``
(:class:`~seqformer.models.gpt.GPTConfig`), ``train`` and ``generate`` (:class:`GenerateConfig`),
gathered in :class:`LMRecipe`; :func:`recipe_from_dict` picks the class by ``task``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from seqformer.config import (
    check_metric,
    from_dict,
    load_yaml,
    located,
    parse_override,
    set_path,
    to_dict,
    unknown_field_error,
)
from seqformer.errors import ConfigError
from seqformer.models.gpt import GPTConfig
from seqformer.models.registry import SeqConfig, seq2seq_config, seq2seq_config_class
from seqformer.training.trainer import TrainConfig

CORPORA = ("files", "cmudict", "bible")
TOKENIZER_KINDS = ("char", "word", "bpe")
METRICS = ("valid_loss", "valid_nll", "per", "wer", "cer", "ter", "bleu", "chrf", "exact",
           "rouge1", "rouge2", "rougeL")
HIGHER_IS_BETTER = ("bleu", "chrf", "exact", "rouge1", "rouge2", "rougeL")
TASKS = ("transduction", "lm", "mlm", "classify", "tag", "qa", "distil", "decision",
         "image-classify", "audio-classify", "speech-to-text", "speech-pretrain", "speech-ctc",
         "image-caption", "text-to-speech", "codec", "codec-tts")
# Language-model corpora: plain text files, or a Bible read from its installed SWORD module.
LM_CORPORA = {"files": None, "kjv": "engKJV2006eb", "web": "engWEB2015eb",
              "rv1909": "spaRV1909eb"}
LM_METRICS = ("valid_loss", "valid_ppl", "valid_bpc")


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they are batched.

    ``corpus: files`` reads ``train``/``valid``/``test``, each either one TSV file
    (``source<TAB>target``) or two aligned files ``[source_file, target_file]``. A missing
    ``valid`` is carved out of ``train`` by a hash of the source (``valid_percent``).
    """

    corpus: str = "files"
    train: list[str] | None = None
    valid: list[str] | None = None
    test: list[str] | None = None
    valid_percent: float = 5.0
    max_examples: int | None = None  # cap on training examples (deterministic subset)
    max_source_len: int = 128  # tokens; longer training pairs are dropped and counted
    max_target_len: int = 128
    batch_tokens: int = 4096  # padded tokens per batch (source or target, whichever is longer)
    pad_to: int = 0  # > 0: fixed batch shapes (lengths rounded up to it), for CUDA graphs
    valid_decode: int = 300  # validation examples decoded for the metric at each evaluation
    stress: bool = True  # corpus: cmudict; false drops the stress digits (the 39-phone set)
    source_module: str = "engWEB2015eb"  # corpus: bible
    target_module: str = "spaRV1909eb"

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; use one of {', '.join(CORPORA)}")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (a TSV file or "
                              "[source_file, target_file])")
        for name in ("train", "valid", "test"):
            paths = getattr(self, name)
            if paths is not None and len(paths) not in (1, 2):
                raise ConfigError(f"data.{name}: give one TSV file or two aligned files")
        if self.batch_tokens <= 0:
            raise ConfigError("data.batch_tokens must be positive")
        if not isinstance(self.pad_to, int) or isinstance(self.pad_to, bool) or self.pad_to < 0:
            raise ConfigError(f"data.pad_to={self.pad_to!r}; use 0 (batches as long as their "
                              "longest example) or a width step such as 8")
        if not isinstance(self.stress, bool):
            raise ConfigError(f"data.stress={self.stress!r}; use true (keep the stress digits, "
                              "TH R UW1) or false (drop them, TH R UW)")
        if not self.stress and self.corpus != "cmudict":
            raise ConfigError("data.stress applies to corpus: cmudict only; remove it")


@dataclass(frozen=True)
class TokenizerConfig:
    source: str = "char"
    target: str = "char"
    shared: bool = False  # one vocabulary for both sides (needed for model.share_embeddings)
    vocab_size: int = 8000  # bpe only
    min_frequency: int = 1

    def __post_init__(self) -> None:
        for side in ("source", "target"):
            if getattr(self, side) not in TOKENIZER_KINDS:
                raise ConfigError(f"tokenizer.{side}={getattr(self, side)!r}; use one of "
                                  f"{', '.join(TOKENIZER_KINDS)}")
        if self.shared and self.source != self.target:
            raise ConfigError("tokenizer.shared needs tokenizer.source == tokenizer.target")


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = 1
    alpha: float = 0.0  # length penalty exponent
    penalty: str = "gnmt"
    nbest: int = 1
    max_length: int | None = None
    batch_tokens: int = 4096  # batch x beam x (source + output) positions held at once
    # Decoding controls (see decoding/processors.py); the CLI flags of the same names win.
    min_length: int = 0
    no_repeat_ngram: int = 0
    repetition_penalty: float = 1.0
    bad_words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.min_length < 0 or self.no_repeat_ngram < 0:
            raise ConfigError("decode.min_length and decode.no_repeat_ngram must be >= 0")
        if not self.repetition_penalty > 0:
            raise ConfigError("decode.repetition_penalty must be > 0 (1 = off)")
        if self.beam < 1 or not 1 <= self.nbest <= self.beam:
            raise ConfigError("decode: need beam >= 1 and 1 <= nbest <= beam")
        if self.penalty not in ("gnmt", "plain"):
            raise ConfigError(f"decode.penalty={self.penalty!r}; use 'gnmt' or 'plain'")


@dataclass(frozen=True)
class Recipe:
    name: str = "run"
    task: str = "transduction"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    # Written by `train` into the run's recipe.yaml: split and tokenizer fingerprints.
    fingerprints: dict[str, str] = field(default_factory=dict)
    # Fine-tune an imported model: "hf:PATH" (Hugging Face Marian dir) or a model directory.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.task != "transduction":
            raise ConfigError(f"task={self.task!r}; use one of {', '.join(TASKS)}")
        modes = {m: "max" if m in HIGHER_IS_BETTER else "min" for m in METRICS}
        check_metric(self.train.metric, self.train.metric_mode, modes)

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int) -> SeqConfig:
        """``model.kind`` (transformer by default, or rnn/lstm/gru) picks the config class."""
        return seq2seq_config(self.model, src_vocab_size, tgt_vocab_size)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class LMDataConfig:
    """The text a language model learns from (``task: lm``).

    ``corpus: files`` concatenates the UTF-8 files in ``train`` (one or more); ``kjv``, ``web``
    and ``rv1909`` read the King James / World English Bible / Spanish Reina-Valera 1909 from
    Debian's SWORD modules (sword-text-kjv, -web, -sparv), one verse per line. Validation is
    the files in ``valid`` or else the last ``valid_percent`` of the text: a contiguous tail,
    so it is text the model never saw the neighbours of. ``max_chars`` keeps the first N
    characters (before the split), for quick runs. A training batch is
    ``batch_size`` random blocks of ``model.max_len`` tokens; ``valid_chars`` caps the validation
    text scored at each evaluation during training (its first N characters, so bits per
    character stay exact for any tokenizer); ``seqformer evaluate`` scores everything.
    ``tokens_per_step`` sets ``train.accumulate`` to reach about that many tokens per update
    (nanoGPT's gradient accumulation to a target batch), whatever fits in memory at once.
    ``train_tokens`` trains on only the first N tokens of the training text, with the
    tokenizer still learnt from all of it and the validation text unchanged: unlike
    ``max_chars``, runs with different amounts of data stay comparable (``seqformer scale
    --data``, the loss as a law of the dataset size).
    """

    corpus: str = "kjv"
    train: list[str] | None = None
    valid: list[str] | None = None
    valid_percent: float = 5.0
    max_chars: int | None = None
    batch_size: int = 32
    valid_chars: int | None = None
    tokens_per_step: int | None = None
    train_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.corpus not in LM_CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}; for task: lm use one of "
                              f"{', '.join(LM_CORPORA)}")
        if self.corpus == "files" and not self.train:
            raise ConfigError("data.train is required with data.corpus: files (one or more "
                              "text files)")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.valid_percent < 100.0:
            raise ConfigError(f"data.valid_percent must be in (0, 100), got {self.valid_percent}")
        for name in ("max_chars", "valid_chars", "tokens_per_step", "train_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be >= 1 (or null for no limit), got {value}")


@dataclass(frozen=True)
class LMTokenizerConfig:
    kind: str = "char"  # char or bpe (word would make an open vocabulary closed)
    vocab_size: int = 8000  # bpe only
    min_frequency: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("char", "bpe"):
            raise ConfigError(f"tokenizer.kind={self.kind!r}; use 'char' or 'bpe'")


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling defaults for ``seqformer generate`` and the sample shown after training."""

    prompt: str = ""
    max_new: int = 200
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        check_sampling(self.max_new, self.temperature, self.top_k, self.top_p, "generate.")


def check_sampling(max_new: int, temperature: float, top_k: int | None, top_p: float | None,
                   prefix: str = "--") -> None:
    """Shared by the recipe section and the CLI flags, so both reject the same values."""
    sep = "_" if prefix != "--" else "-"
    if max_new < 0:
        raise ConfigError(f"{prefix}max{sep}new must be >= 0, got {max_new}")
    if temperature < 0:
        raise ConfigError(f"{prefix}temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"{prefix}top{sep}k must be >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"{prefix}top{sep}p must be in (0, 1], got {top_p}")


@dataclass(frozen=True)
class LMRecipe:
    name: str = "lm"
    task: str = "lm"
    data: LMDataConfig = field(default_factory=LMDataConfig)
    tokenizer: LMTokenizerConfig = field(default_factory=LMTokenizerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)
    # Fine-tune an imported model: "hf:PATH" (a GPT-2 directory) or a model directory.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.train.metric not in LM_METRICS:
            raise ConfigError(f"train.metric={self.train.metric!r}; for task: lm use one of "
                              f"{', '.join(LM_METRICS)}")

    def model_config(self, vocab_size: int) -> GPTConfig:
        return from_dict(GPTConfig, {**self.model, "vocab_size": vocab_size}, "recipe",
                         "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def bundled_recipes() -> list[str]:
    root = resources.files("seqformer") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _first_sentence(text: str, shortest: int = 40) -> str:
    """Up to the first ". " or ": " outside parentheses (so "(Chen et al. 2021)" stays whole)
    that leaves at least ``shortest`` characters."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if (depth == 0 and ch in ".:" and text[i + 1:i + 2] == " " and i >= shortest
                and not text[:i].endswith((" al", "e.g", "i.e"))):
            return text[:i]
    return text.rstrip(".")


def recipe_summary(name: str, limit: int = 100) -> tuple[str, str]:
    """A bundled recipe's task and the first sentence of its header comment (cut at
    ``limit`` characters): what ``seqformer recipes`` prints."""
    text = (resources.files("seqformer") / "recipes" / f"{name}.yaml").read_text(
        encoding="utf-8")
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    summary = _first_sentence(" ".join(header))
    if len(summary) > limit:
        summary = summary[:limit - 3].rsplit(" ", 1)[0] + "..."
    import yaml

    task = yaml.safe_load(text).get("task", "transduction")
    return str(task), summary


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a bundled recipe (``g2p-cmudict-quick``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith((".yaml", ".yml")) else path.name
    candidate = resources.files("seqformer") / "recipes" / f"{stem}.yaml"
    if candidate.is_file():
        return Path(str(candidate))
    raise ConfigError(f"{name_or_path}: no such recipe file or bundled recipe; bundled: "
                      f"{', '.join(bundled_recipes())}")


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe | LMRecipe:
    path = resolve_recipe_path(name_or_path)
    tree = load_yaml(path)
    for text in overrides or []:
        set_path(tree, *parse_override(text))
    return recipe_from_dict(tree, str(path))


def recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> Recipe | LMRecipe:
    """Build and fully validate a recipe, so a bad field fails before any data is read.

    ``task`` picks the recipe class: :class:`Recipe` (transduction) or :class:`LMRecipe`.
    """
    if tree.get("task") in ("mlm", "classify", "tag", "qa", "distil"):  # BERT: recipe_encoder
        from seqformer.recipe_encoder import encoder_recipe_from_dict

        return encoder_recipe_from_dict(tree, where)
    if tree.get("task") == "decision":  # Decision Transformer: recipe_decision
        from seqformer.recipe_decision import decision_recipe_from_dict

        return decision_recipe_from_dict(tree, where)
    if tree.get("task") == "image-classify":  # Vision Transformer: recipe_vision
        from seqformer.recipe_vision import vision_recipe_from_dict

        return vision_recipe_from_dict(tree, where)
    if tree.get("task") == "speech-to-text":  # Whisper-shaped speech to text: recipe_speech
        from seqformer.recipe_speech import speech_recipe_from_dict

        return speech_recipe_from_dict(tree, where)
    if tree.get("task") == "audio-classify":  # Audio Spectrogram Transformer: recipe_audio
        from seqformer.recipe_audio import audio_recipe_from_dict

        return audio_recipe_from_dict(tree, where)
    if tree.get("task") in ("speech-pretrain", "speech-ctc"):  # wav2vec 2.0 family: recipe_ssl
        from seqformer.recipe_ssl import ssl_recipe_from_dict

        return ssl_recipe_from_dict(tree, where)
    if tree.get("task") == "image-caption":  # ViT encoder + text decoder: recipe_caption
        from seqformer.recipe_caption import caption_recipe_from_dict

        return caption_recipe_from_dict(tree, where)
    if tree.get("task") == "text-to-speech":  # SpeechT5-shaped TTS: recipe_tts
        from seqformer.recipe_tts import tts_recipe_from_dict

        return tts_recipe_from_dict(tree, where)
    if tree.get("task") in ("codec", "codec-tts"):  # EnCodec and VALL-E: recipe_codec
        from seqformer.recipe_codec import codec_recipe_from_dict

        return codec_recipe_from_dict(tree, where)
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: model must be a mapping of fields")
    task = tree.get("task", "transduction")
    if task not in TASKS:  # first: every other check depends on the task
        raise ConfigError(f"{where}: task={task!r}; use one of {', '.join(TASKS)}")
    lm = task == "lm"
    config_cls, vocab_fields = ((GPTConfig, {"vocab_size"}) if lm else
                                (seq2seq_config_class(model.get("kind", "transformer"), where),
                                 {"src_vocab_size", "tgt_vocab_size"}))
    valid = {f.name for f in dataclasses.fields(config_cls)} - vocab_fields
    if not lm:
        valid.add("kind")  # picks the family: see seqformer.models.registry
    for key in model:
        if key not in valid:
            raise unknown_field_error(key, sorted(valid), where, "model.")
    recipe: Recipe | LMRecipe
    with located(where):
        if lm:
            recipe = from_dict(LMRecipe, tree, where)
            recipe.model_config(100)  # value checks need only a placeholder vocab size
        else:
            recipe = from_dict(Recipe, tree, where)
            recipe.model_config(100, 100)
    return recipe
