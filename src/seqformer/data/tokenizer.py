"""Tokenizers: text <-> integer ids, with the same four special ids in every vocabulary.

Models, batching and decoding all hard-code ``PAD_ID=0, BOS_ID=1, EOS_ID=2, UNK_ID=3`` so that
no component has to ask a tokenizer what "padding" is; every tokenizer here guarantees those
ids. Three kinds cover the tasks:

* ``char`` - one id per Unicode character; right for spelling-level tasks such as G2P sources.
* ``word`` - one id per whitespace-separated symbol; right for phoneme strings ("TH R UW1"),
  where a "word" is a phone.
* ``bpe``  - a Hugging Face ``tokenizers`` BPE model (NFKC + Metaspace) for open-vocabulary
  text, where a character vocabulary makes sequences too long and a word vocabulary too sparse.

``encode`` never adds ``<s>``/``</s>``: batching adds them where the model needs them, so the
same ids serve encoder inputs, decoder targets and metrics. A vocabulary is identified by its
``fingerprint`` so a checkpoint can refuse a tokenizer it was not trained with.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seqformer.errors import CheckpointError, ConfigError, DataError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS: list[str] = [PAD, BOS, EOS, UNK]

TOKENIZER_FILE = "tokenizer.json"
BPE_FILE = "bpe.json"  # the plain HF file, so `tokenizers.Tokenizer.from_file` can read it too
KINDS = ("char", "word", "bpe", "wordpiece")  # wordpiece: BERT's, in data/wordpiece.py
DEFAULT_BPE_VOCAB_SIZE = 8000

# Labels for characters that would be invisible (or break a chart's layout) in `pieces`.
_VISIBLE = {" ": "\u2423", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _one_line(error: BaseException) -> str:
    """Library messages can span lines; UserError messages must not."""
    return " ".join(str(error).split())


def _digest(content: Any) -> str:
    """Hash canonical JSON so the fingerprint depends on the vocabulary, not on file layout."""
    blob = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Tokenizer(ABC):
    """Common interface, so tasks and the CLI never branch on the tokenizer kind."""

    kind: str = ""

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included; the model's embedding table has this many rows."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids for `text` without ``<s>``/``</s>``; unseen symbols map to `unk_id`."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids`, silently dropping special ids (the caller cuts at ``</s>``)."""

    @abstractmethod
    def pieces(self, ids: Sequence[int]) -> list[str]:
        """One readable label per id, for attention charts and debugging."""

    @abstractmethod
    def _content(self) -> dict[str, Any]:
        """Everything that defines the id mapping; both the fingerprint and `save` use it."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json` (plus any companion file) into `directory`."""

    @property
    def fingerprint(self) -> str:
        """16 hex chars identifying the vocabulary; equal after a save/load round trip."""
        return _digest(self._content())

    def count_unknown(self, text: str) -> int:
        """How many symbols of `text` fall outside the vocabulary (for coverage warnings)."""
        return sum(1 for i in self.encode(text) if i == UNK_ID)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, fp={self.fingerprint})"


class _SymbolTokenizer(Tokenizer):
    """A fixed list of symbols, id = position; char and word differ only in how text splits."""

    joiner = ""

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        if symbols[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"symbols must start with {SPECIAL_TOKENS}, got {symbols[:4]}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must be unique")
        self.symbols = symbols
        self._ids = {s: i for i, s in enumerate(symbols)}

    @abstractmethod
    def split(self, text: str) -> list[str]:
        """Cut text into symbols; also used when building the vocabulary."""

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(s, UNK_ID) for s in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.joiner.join(self.symbols[i] for i in map(int, ids) if i >= len(SPECIAL_TOKENS))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [_VISIBLE.get(s, s) for s in (self.symbols[int(i)] for i in ids)]

    def _content(self) -> dict[str, Any]:
        return {"kind": self.kind, "symbols": self.symbols}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self._content(), ensure_ascii=False, indent=1)
        (directory / TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")


class CharTokenizer(_SymbolTokenizer):
    """One id per Unicode character; spaces are symbols too, so decode joins with ''."""

    kind = "char"
    joiner = ""

    def split(self, text: str) -> list[str]:
        return list(text)


class WordTokenizer(_SymbolTokenizer):
    """One id per whitespace-separated symbol; decode re-joins with single spaces."""

    kind = "word"
    joiner = " "

    def split(self, text: str) -> list[str]:
        return text.split()


class BPETokenizer(Tokenizer):
    """Thin wrapper over a trained HF BPE tokenizer; the HF object does the real work."""

    kind = "bpe"

    def __init__(self, hf: Any) -> None:
        got = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
        if got != [PAD_ID, BOS_ID, EOS_ID, UNK_ID]:
            raise ValueError(f"BPE special tokens must have ids 0-3, got {got}")
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        # Filter ourselves rather than trust skip_special_tokens, so the rule matches char/word.
        return self.hf.decode([int(i) for i in ids if int(i) >= len(SPECIAL_TOKENS)])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [str(self.hf.id_to_token(int(i))) for i in ids]

    def _content(self) -> dict[str, Any]:
        # Merges changed from "a b" strings to [a, b] lists across tokenizers releases;
        # normalising keeps the fingerprint stable across library versions.
        model = json.loads(self.hf.to_str())["model"]
        vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model["merges"]]
        return {"kind": self.kind, "vocab": [tok for tok, _ in vocab], "merges": merges}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / BPE_FILE))
        text = json.dumps({"kind": self.kind, "file": BPE_FILE}, indent=1)
        (directory / TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")


def _train_symbols(
    cls: type[_SymbolTokenizer], texts: Iterable[str], min_frequency: int
) -> _SymbolTokenizer:
    """Vocabulary = symbols seen at least `min_frequency` times, sorted so ids are reproducible."""
    splitter = cls(SPECIAL_TOKENS)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(splitter.split(text))
    if not counts:
        raise DataError(f"cannot train a {cls.kind} tokenizer: no text given; check the corpus")
    kept = sorted(s for s, c in counts.items() if c >= min_frequency and s not in SPECIAL_TOKENS)
    return cls(SPECIAL_TOKENS + kept)


def _train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int) -> BPETokenizer:
    """NFKC + Metaspace so decode(encode(s)) == s for ordinary single-spaced text."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    texts = [t for t in texts if t]
    if not texts:
        raise DataError("cannot train a bpe tokenizer: no text given; check the corpus")
    hf = HFTokenizer(models.BPE(unk_token=UNK))
    hf.normalizer = normalizers.NFKC()
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    hf.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(hf)


def train_tokenizer(
    kind: str, texts: Iterable[str], vocab_size: int | None = None, min_frequency: int = 1
) -> Tokenizer:
    """Build a tokenizer from training texts only, so valid/test symbols can show up as unk.

    `vocab_size` applies to bpe only (default 8000); char/word vocabularies are whatever the
    texts contain, and `vocab_size` is ignored for them.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(KINDS)}")
    if min_frequency < 1:
        raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}; raise it")
    if kind == "char":
        return _train_symbols(CharTokenizer, texts, min_frequency)
    if kind == "word":
        return _train_symbols(WordTokenizer, texts, min_frequency)
    size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
    if kind == "wordpiece":
        from seqformer.data.wordpiece import train_wordpiece

        return train_wordpiece(texts, size, min_frequency)
    if size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"bpe vocab_size must be > {len(SPECIAL_TOKENS)}, got {size}; raise it")
    return _train_bpe(texts, size, min_frequency)


_POINT = "point at the directory a model was saved to"
_RESTORE = "retrain or restore the file"


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Rebuild a tokenizer saved by `Tokenizer.save`; any damage is a CheckpointError."""
    path = Path(directory) / TOKENIZER_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        kind = meta["kind"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: tokenizer file not found; {_POINT}") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path}: corrupt tokenizer file ({_one_line(e)}); {_RESTORE}"
        ) from None
    try:
        if kind == "char":
            return CharTokenizer(meta["symbols"])
        if kind == "word":
            return WordTokenizer(meta["symbols"])
        if kind == "bpe":
            from tokenizers import Tokenizer as HFTokenizer

            hf_path = Path(directory) / str(meta.get("file", BPE_FILE))
            if not hf_path.is_file():
                raise CheckpointError(f"{hf_path}: BPE file not found; restore it next to {path}")
            return BPETokenizer(HFTokenizer.from_file(str(hf_path)))
        if kind in ("hf", "sentencepiece", "hf-ctc"):  # imported with a Hugging Face checkpoint
            from seqformer.interop.hf_tokenizers import load_saved

            return load_saved(directory, meta)
        if kind == "wordpiece":
            from seqformer.data.wordpiece import WORDPIECE_FILE, WordPieceTokenizer

            wp_path = Path(directory) / str(meta.get("file", WORDPIECE_FILE))
            if not wp_path.is_file():
                raise CheckpointError(f"{wp_path}: WordPiece file not found; restore it next "
                                      f"to {path}")
            return WordPieceTokenizer.from_file(wp_path)
    except CheckpointError:
        raise
    except Exception as e:  # tokenizers raises plain Exception on bad JSON
        raise CheckpointError(f"{path}: corrupt tokenizer ({_one_line(e)}); {_RESTORE}") from None
    raise CheckpointError(f"{path}: unknown tokenizer kind {kind!r}; expected one of {KINDS}")
