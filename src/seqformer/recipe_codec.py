"""Recipes of the neural-codec tasks. :func:`seqformer.recipe.recipe_from_dict` hands
``task: codec`` and ``task: codec-tts`` to :func:`codec_recipe_from_dict`.

``task: codec`` (:class:`CodecRecipe`) trains an EnCodec (``models/encodec.py``) on the
spoken-words audio: sections ``data`` (:class:`CodecDataConfig`), ``model``
(:class:`~seqformer.models.encodec.EncodecConfig` fields), ``train`` (:class:`CodecTrainConfig`)
and ``bandwidth`` (kbps that validation and ``evaluate`` score at).

``task: codec-tts`` (:class:`VALLERecipe`) trains VALL-E (``models/valle.py``) on the codes of
an EnCodec run: sections ``data`` (:class:`CodecTTSDataConfig`, the tts-words corpus),
``codec`` (:class:`CodecSource`: which run, which bandwidth), ``model``
(:class:`~seqformer.models.valle.VALLEConfig` fields; vocabulary and codebooks come from the
tokenizer and the codec), ``train`` and ``generate`` (:class:`CodecGenerateConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, model_section, to_dict
from seqformer.errors import ConfigError
from seqformer.training.trainer import TrainConfig

CODEC_METRICS = {"valid_loss": "min", "mel_l1": "min", "mcd": "min"}
VALLE_METRICS = {"valid_loss": "min", "ar_loss": "min", "nar_loss": "min", "ar_acc": "max",
                 "nar_acc": "max"}
VALLE_DERIVED = {"vocab_size", "n_q", "codebook_size", "pad_id"}
DEFAULT_VOICES = ("en-us+m3", "en-us+f3", "en+m1", "en+f2")


@dataclass(frozen=True)
class CodecDataConfig:
    """The spoken-words corpus (``data/spoken_words.py``: ``max_words`` CMUdict words of
    ``min_letters``..``max_letters`` letters, each said by ``voices_per_word`` voices of
    ``accents``, split by word and voice variant); only the training split's audio is trained
    on (a codec needs no transcripts). Each batch is ``batch_size`` random crops of
    ``segment_ms`` ms, drawn from (seed, batch position). ``valid_utterances`` validation
    utterances are coded whole at each evaluation (0: all)."""

    corpus: str = "spoken-words"
    max_words: int = 1500
    min_letters: int = 3
    max_letters: int = 10
    accents: list[str] = field(default_factory=lambda: ["en", "en-us", "en-gb-x-rp",
                                                        "en-gb-scotland", "en-029"])
    voices_per_word: int = 3
    valid_variants: int = 2
    test_variants: int = 2
    split_seed: int = 0
    espeak: str | None = None
    segment_ms: int = 500
    batch_size: int = 16
    valid_utterances: int = 64

    def __post_init__(self) -> None:
        if self.corpus != "spoken-words":
            raise ConfigError(f"data.corpus={self.corpus!r}; task: codec trains on "
                              "spoken-words")
        for name in ("max_words", "min_letters", "max_letters", "voices_per_word",
                     "segment_ms", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.valid_utterances < 0:
            raise ConfigError(f"data.valid_utterances must be >= 0, got "
                              f"{self.valid_utterances}")


@dataclass(frozen=True)
class CodecTrainConfig(TrainConfig):
    """Defaults for a small codec on CPU: AdamW 1e-3 (EnCodec's 3e-4 is for 300k steps),
    cosine decay, best weights by the MCD of the validation reconstructions."""

    max_steps: int = 1000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 50
    eval_every: int = 250
    save_every: int = 0
    log_every: int = 50
    metric: str = "mcd"
    metric_mode: str = "min"


@dataclass(frozen=True)
class CodecRecipe:
    name: str = "codec"
    task: str = "codec"
    data: CodecDataConfig = field(default_factory=CodecDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: CodecTrainConfig = field(default_factory=CodecTrainConfig)
    bandwidth: float | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_metric(self.train.metric, self.train.metric_mode, CODEC_METRICS, self.task)

    def model_config(self) -> Any:
        from seqformer.models.encodec import EncodecConfig

        config = from_dict(EncodecConfig, self.model, "recipe", "model.")
        if config.audio_channels != 1:
            raise ConfigError("model.audio_channels must be 1: the spoken-words audio is mono")
        if config.chunk_length_s is not None:
            raise ConfigError("model.chunk_length_s: task: codec trains an unchunked codec "
                              "(chunking is for long 48 kHz signals)")
        if config.sampling_rate != 16000:
            raise ConfigError(f"model.sampling_rate={config.sampling_rate}: the spoken-words "
                              "audio is 16 kHz; set 16000")
        if self.bandwidth is not None and self.bandwidth not in config.target_bandwidths:
            raise ConfigError(f"bandwidth={self.bandwidth}: not one of model."
                              f"target_bandwidths {list(config.target_bandwidths)}")
        return config

    @property
    def score_bandwidth(self) -> float:
        """kbps validation and evaluate use: ``bandwidth``, else the largest."""
        return self.bandwidth or self.model_config().target_bandwidths[-1]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class CodecTTSDataConfig:
    """The tts-words corpus (``data/tts_corpus.py``): every word said by each of ``voices``;
    ``input`` phonemes (espeak-ng's, in that voice) or spelling. Each training example is a
    word with an acoustic prompt: another training word of the same voice, drawn from (seed,
    epoch, example). ``test_utterances`` test words are generated for the test MCD (0: all)."""

    voices: list[str] = field(default_factory=lambda: list(DEFAULT_VOICES))
    input: str = "phonemes"
    max_words: int = 1500
    min_letters: int = 3
    max_letters: int = 10
    espeak: str | None = None
    batch_size: int = 32
    test_utterances: int = 0

    def __post_init__(self) -> None:
        if self.input not in ("phonemes", "spelling"):
            raise ConfigError(f"data.input={self.input!r}; use phonemes or spelling")
        if not self.voices:
            raise ConfigError("data.voices: give at least one espeak-ng voice, e.g. en-us+m3")
        for name in ("max_words", "min_letters", "max_letters", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.test_utterances < 0:
            raise ConfigError(f"data.test_utterances must be >= 0, got {self.test_utterances}")


@dataclass(frozen=True)
class CodecSource:
    """``from_run``: the directory of a ``task: codec`` run (family encodec), frozen;
    ``bandwidth``: kbps of the codes modelled (default: that run's own ``bandwidth``, else its
    largest); it decides the number of codebooks ``n_q``."""

    from_run: str = ""
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        if not self.from_run:
            raise ConfigError("codec.from_run is required: the run directory of a 'task: codec' "
                              "recipe, e.g. runs/encodec-spoken-words")


@dataclass(frozen=True)
class CodecGenerateConfig:
    """AR sampling: ``temperature`` (0: greedy) and ``top_k`` (0: off); at most
    ``max_len_ratio`` code frames per input text token (prompt text included) and
    ``max_frames`` in all; ``seed`` of the generator (same seed, same speech)."""

    temperature: float = 1.0
    top_k: int = 0
    max_len_ratio: float = 10.0
    max_frames: int = 150
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError("generate.temperature and generate.top_k must be >= 0")
        if not self.max_len_ratio > 0 or self.max_frames < 1:
            raise ConfigError("generate.max_len_ratio must be > 0 and generate.max_frames >= 1")


@dataclass(frozen=True)
class VALLETrainConfig(TrainConfig):
    """Defaults for a small VALL-E on CPU: AdamW 1e-3, short warmup, cosine decay, best
    weights by the validation loss (AR + NAR cross-entropy)."""

    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_steps: int = 100
    eval_every: int = 250
    save_every: int = 0
    log_every: int = 50
    metric: str = "valid_loss"
    metric_mode: str = "min"


@dataclass(frozen=True)
class VALLERecipe:
    name: str = "valle"
    task: str = "codec-tts"
    data: CodecTTSDataConfig = field(default_factory=CodecTTSDataConfig)
    codec: CodecSource = field(default_factory=CodecSource)
    model: dict[str, Any] = field(default_factory=dict)
    train: VALLETrainConfig = field(default_factory=VALLETrainConfig)
    generate: CodecGenerateConfig = field(default_factory=CodecGenerateConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_metric(self.train.metric, self.train.metric_mode, VALLE_METRICS, self.task)

    def model_config(self, vocab_size: int, n_q: int, codebook_size: int) -> Any:
        from seqformer.models.valle import VALLEConfig

        return from_dict(VALLEConfig, {**self.model, "vocab_size": vocab_size, "n_q": n_q,
                                       "codebook_size": codebook_size}, "recipe", "model.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def codec_recipe_from_dict(tree: dict[str, Any], where: str = "recipe"
                           ) -> CodecRecipe | VALLERecipe:
    """Build and validate a ``codec`` or ``codec-tts`` recipe, so a bad field fails before
    any audio is made."""
    from seqformer.models.encodec import EncodecConfig
    from seqformer.models.valle import VALLEConfig

    if tree.get("task") == "codec":
        model_section(tree, EncodecConfig, where, set())
        with located(where):
            recipe = from_dict(CodecRecipe, tree, where)
            recipe.model_config()
        return recipe
    model_section(tree, VALLEConfig, where, VALLE_DERIVED)
    with located(where):
        valle = from_dict(VALLERecipe, tree, where)
        valle.model_config(40, 4, 256)  # value checks need only placeholder sizes
    return valle
