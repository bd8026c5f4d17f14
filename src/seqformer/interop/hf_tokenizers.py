"""Tokenizers imported with Hugging Face checkpoints, behind seqformer's Tokenizer interface.

An imported model keeps its original vocabulary, so its special ids are the checkpoint's, not
seqformer's fixed 0-3: both wrappers report them through ``pad_id``/``bos_id``/``eos_id``/
``unk_id`` (and the imported model's config carries the same ids).

* :class:`HFFileTokenizer` (kind ``hf``): any ``tokenizers`` JSON file, e.g. GPT-2's byte-level
  BPE (``tokenizer.json``, or rebuilt from ``vocab.json`` + ``merges.txt``).
* :class:`SentencePieceTokenizer` (kind ``sentencepiece``): Marian/opus-mt, a SentencePiece model
  that cuts text into pieces plus a ``vocab.json`` that numbers them. Marian sources end with
  ``</s>``, so the source side is saved with ``append_eos`` and ``encode`` adds it (the one
  departure from "encode never adds specials": the model was trained that way).
* :class:`CTCVocabTokenizer` (kind ``hf-ctc``): a ``Wav2Vec2CTCTokenizer``'s ``vocab.json``,
  one id per character, for imported wav2vec2 / HuBERT CTC models (and written back by
  :func:`write_ctc_tokenizer` on export, our character tokenizer included).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqformer.data.tokenizer import TOKENIZER_FILE, Tokenizer
from seqformer.errors import CheckpointError, ConfigError

HF_FILE = "hf_tokenizer.json"
SPM_FILE = "spm.model"
VOCAB_FILE = "vocab.json"
SPECIALS = ("pad", "bos", "eos", "unk")


class _ImportedTokenizer(Tokenizer):
    """Special ids come from the checkpoint; everything else from the subclass."""

    def __init__(self, special_ids: dict[str, int]) -> None:
        missing = [k for k in SPECIALS if not isinstance(special_ids.get(k), int)]
        if missing:
            raise ValueError(f"special ids missing: {missing}")
        self.special_ids = {k: int(special_ids[k]) for k in SPECIALS}

    @property
    def pad_id(self) -> int:
        return self.special_ids["pad"]

    @property
    def bos_id(self) -> int:
        return self.special_ids["bos"]

    @property
    def eos_id(self) -> int:
        return self.special_ids["eos"]

    @property
    def unk_id(self) -> int:
        return self.special_ids["unk"]

    def count_unknown(self, text: str) -> int:
        return sum(1 for i in self.encode(text) if i == self.unk_id)

    def _without_specials(self, ids: Sequence[int]) -> list[int]:
        specials = set(self.special_ids.values())
        return [int(i) for i in ids if int(i) not in specials]


class HFFileTokenizer(_ImportedTokenizer):
    """A ``tokenizers.Tokenizer`` loaded from its JSON file (GPT-2's byte-level BPE)."""

    kind = "hf"

    def __init__(self, hf: Any, special_ids: dict[str, int]) -> None:
        super().__init__(special_ids)
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(self._without_specials(ids), skip_special_tokens=False)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [str(self.hf.id_to_token(int(i))) for i in ids]

    def _content(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self.hf.to_str()),
                "special_ids": self.special_ids}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / HF_FILE))
        meta = {"kind": self.kind, "file": HF_FILE, "special_ids": self.special_ids}
        (directory / TOKENIZER_FILE).write_text(json.dumps(meta, indent=1) + "\n",
                                                encoding="utf-8")


class SentencePieceTokenizer(_ImportedTokenizer):
    """Marian's scheme: SentencePiece pieces numbered by a separate ``vocab.json``.

    Pieces missing from the vocabulary become ``unk_id`` (as MarianTokenizer does); a leading
    language code such as ``>>fra<<`` is kept as one token, as multilingual opus-mt expects.
    """

    kind = "sentencepiece"

    def __init__(self, spm_path: str | Path, vocab: dict[str, int], special_ids: dict[str, int],
                 append_eos: bool = False) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise ConfigError("Marian tokenizers need the sentencepiece package: "
                              "pip install sentencepiece") from None
        super().__init__(special_ids)
        self.spm_path = Path(spm_path)
        self.spm = sentencepiece.SentencePieceProcessor()
        self.spm.Load(str(self.spm_path))
        self.vocab = dict(vocab)
        self.inverse = {i: piece for piece, i in self.vocab.items()}
        self.append_eos = append_eos

    @property
    def vocab_size(self) -> int:
        return max(self.inverse) + 1

    def encode(self, text: str) -> list[int]:
        code: list[str] = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[: end + 2]], text[end + 2:]
        pieces = code + self.spm.encode(text, out_type=str)
        ids = [self.vocab.get(p, self.unk_id) for p in pieces]
        return ids + [self.eos_id] if self.append_eos else ids

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.inverse.get(i, "") for i in self._without_specials(ids)]
        return self.spm.decode_pieces([p for p in pieces if p]).replace("\u2581", " ").strip()

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.inverse.get(int(i), "<?>") for i in ids]

    def _content(self) -> dict[str, Any]:
        import hashlib

        return {"kind": self.kind, "vocab": sorted(self.vocab.items(), key=lambda kv: kv[1]),
                "spm": hashlib.sha256(self.spm_path.read_bytes()).hexdigest(),
                "special_ids": self.special_ids, "append_eos": self.append_eos}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.spm_path.resolve() != (directory / SPM_FILE).resolve():
            shutil.copyfile(self.spm_path, directory / SPM_FILE)
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False, indent=1)
                                            + "\n", encoding="utf-8")
        meta = {"kind": self.kind, "spm": SPM_FILE, "vocab": VOCAB_FILE,
                "special_ids": self.special_ids, "append_eos": self.append_eos}
        (directory / TOKENIZER_FILE).write_text(json.dumps(meta, indent=1) + "\n",
                                                encoding="utf-8")


def load_saved(directory: str | Path, meta: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer written by one of the ``save`` methods above (``load_tokenizer``
    dispatches here on the kinds ``hf``, ``sentencepiece`` and ``hf-ctc``)."""
    directory = Path(directory)
    kind = meta["kind"]
    if kind == CTC_KIND:
        return CTCVocabTokenizer.from_saved(directory, meta)
    if kind == "hf":
        from tokenizers import Tokenizer as RawTokenizer

        path = directory / str(meta.get("file", HF_FILE))
        if not path.is_file():
            raise CheckpointError(f"{path}: tokenizer file not found; restore it")
        return HFFileTokenizer(RawTokenizer.from_file(str(path)), meta["special_ids"])
    spm = directory / str(meta.get("spm", SPM_FILE))
    vocab_path = directory / str(meta.get("vocab", VOCAB_FILE))
    for path in (spm, vocab_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: tokenizer file not found; restore it")
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    return SentencePieceTokenizer(spm, vocab, meta["special_ids"], bool(meta.get("append_eos")))


# -- writing for transformers -------------------------------------------------------------------
def write_hf_tokenizer(tokenizer: HFFileTokenizer, directory: str | Path,
                       tokenizer_class: str) -> None:
    """``tokenizer.json`` plus the ``tokenizer_config.json`` that names its special tokens, the
    files ``AutoTokenizer.from_pretrained`` reads."""
    directory = Path(directory)
    tokenizer.hf.save(str(directory / "tokenizer.json"))
    names = {f"{k}_token": tokenizer.hf.id_to_token(v) for k, v in tokenizer.special_ids.items()}
    config = {"tokenizer_class": tokenizer_class, "add_prefix_space": False, **names}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                     encoding="utf-8")


# -- building from a Hugging Face directory ----------------------------------------------------
def gpt2_tokenizer(directory: str | Path, special_ids: dict[str, int]) -> HFFileTokenizer | None:
    """GPT-2's byte-level BPE from ``tokenizer.json``, else from ``vocab.json`` +
    ``merges.txt``; None when the directory holds neither (weights-only checkpoints)."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        return HFFileTokenizer(RawTokenizer.from_file(str(directory / "tokenizer.json")),
                               special_ids)
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    hf = RawTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    specials = [hf.id_to_token(i) for i in sorted(set(special_ids.values()))]
    hf.add_special_tokens([t for t in specials if t is not None])
    return HFFileTokenizer(hf, special_ids)


def marian_tokenizers(directory: str | Path, special_ids: dict[str, int]
                      ) -> tuple[SentencePieceTokenizer, SentencePieceTokenizer] | None:
    """(source, target) tokenizers from ``source.spm``, ``target.spm`` and ``vocab.json``;
    None when the directory holds no tokenizer files."""
    directory = Path(directory)
    files = [directory / name for name in ("source.spm", "target.spm", "vocab.json")]
    if not any(f.is_file() for f in files):
        return None
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; a Marian directory needs source.spm, "
                                  "target.spm and vocab.json together")
    if (directory / "target_vocab.json").is_file():
        raise CheckpointError(f"{directory}: separate source/target vocabularies "
                              "(target_vocab.json) are not supported yet; use a shared-vocab "
                              "opus-mt model")
    vocab = json.loads(files[2].read_text(encoding="utf-8"))
    return (SentencePieceTokenizer(files[0], vocab, special_ids, append_eos=True),
            SentencePieceTokenizer(files[1], vocab, special_ids))


# -- CTC character vocabularies (Wav2Vec2CTCTokenizer) -----------------------------------------
CTC_KIND = "hf-ctc"


class CTCVocabTokenizer(_ImportedTokenizer):
    """A ``Wav2Vec2CTCTokenizer`` vocabulary (kind ``hf-ctc``): one id per character (or
    special token) numbered by ``vocab.json``, the word delimiter (``|``) standing for a space.

    ``decode`` takes ids *after* the CTC collapse (``decoding/ctc.py`` merges repeats and drops
    the blank, HF's pad), so it does not group repeats again -- that would merge the two L of
    HELLO -- and is then what ``Wav2Vec2CTCTokenizer.decode`` does: specials dropped, the
    delimiter becomes a space, the ends stripped, lower-cased under ``do_lower_case`` (which
    upper-cases the text on ``encode``, HF's convention for upper-case vocabularies). HF's
    default ``batch_decode`` writes a predicted ``<s>`` / ``</s>`` / ``<unk>`` literally (and
    with ``skip_special_tokens`` drops the pad before grouping, merging letters a blank kept
    apart); ours drops them, the contract of every seqformer tokenizer.

    ``size`` is the model's vocabulary: ``vocab.json`` may number fewer ids than the CTC head
    has rows (ids without a token decode to nothing), never more.
    """

    kind = CTC_KIND

    def __init__(self, vocab: dict[str, int], special_ids: dict[str, int], size: int,
                 word_delimiter: str = "|", do_lower_case: bool = False,
                 tokens: dict[str, str] | None = None) -> None:
        super().__init__(special_ids)
        # HF's names of the four specials (written back on export); a special that HF keeps
        # outside vocab.json has its id stood in by the pad, but keeps its own name.
        self.tokens = {k: str(v) for k, v in (tokens or {}).items()}
        self.vocab = {str(k): int(v) for k, v in vocab.items()}
        self.inverse = {i: token for token, i in self.vocab.items()}
        if len(self.inverse) != len(self.vocab):
            raise ValueError("vocab.json gives two tokens the same id")
        if self.vocab and max(self.inverse) >= size:
            raise ValueError(f"vocab.json numbers ids up to {max(self.inverse)} but the model "
                             f"has {size} outputs")
        self.size, self.word_delimiter = int(size), word_delimiter
        self.do_lower_case = bool(do_lower_case)
        # Multi-character entries (<pad>, <unk>, ...) are tokens, never spelled out by encode.
        self._chars = {t: i for t, i in self.vocab.items() if len(t) == 1}

    @property
    def vocab_size(self) -> int:
        return self.size

    @property
    def case(self) -> str | None:
        """The case transcripts come out in, which references are compared in: "lower" under
        ``do_lower_case`` (decode lower-cases), else "upper" / "lower" when every letter the
        vocabulary spells is of one case; None for a mixed-case vocabulary."""
        if self.do_lower_case:
            return "lower"
        letters = [t for t in self._chars if t.isalpha() and t.lower() != t.upper()]
        if letters and all(t.isupper() for t in letters):
            return "upper"
        if letters and all(t.islower() for t in letters):
            return "lower"
        return None

    def reference(self, text: str) -> str:
        """``text`` in the case this vocabulary transcribes in (for CER / WER): a model with
        an upper-case vocabulary (wav2vec2-base-960h) is not wrong on every letter of a
        lower-case reference."""
        case = self.case
        return text.upper() if case == "upper" else text.lower() if case == "lower" else text

    def encode(self, text: str) -> list[int]:
        if self.do_lower_case:
            text = text.upper()
        return [self._chars.get(self.word_delimiter if c == " " else c, self.unk_id)
                for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.inverse.get(i, "") for i in self._without_specials(ids)]
        text = "".join(" " if t == self.word_delimiter else t for t in tokens).strip()
        return text.lower() if self.do_lower_case else text

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.inverse.get(int(i), "<?>") for i in ids]

    def _settings(self) -> dict[str, Any]:
        return {"special_ids": self.special_ids, "size": self.size,
                "word_delimiter": self.word_delimiter, "do_lower_case": self.do_lower_case,
                "tokens": self.tokens}

    def _content(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": sorted(self.vocab.items(), key=lambda kv: kv[1]),
                **self._settings()}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False, indent=1)
                                            + "\n", encoding="utf-8")
        meta = {"kind": self.kind, "vocab": VOCAB_FILE, **self._settings()}
        (directory / TOKENIZER_FILE).write_text(json.dumps(meta, indent=1) + "\n",
                                                encoding="utf-8")

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any]) -> CTCVocabTokenizer:
        path = directory / str(meta.get("vocab", VOCAB_FILE))
        if not path.is_file():
            raise CheckpointError(f"{path}: tokenizer file not found; restore it")
        return cls(json.loads(path.read_text(encoding="utf-8")), meta["special_ids"],
                   int(meta["size"]), str(meta["word_delimiter"]), bool(meta["do_lower_case"]),
                   meta.get("tokens"))


def _token_name(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or an AddedToken
    dict (``{"content": ...}``)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def ctc_tokenizer(directory: str | Path, size: int, blank: int) -> CTCVocabTokenizer | None:
    """The ``Wav2Vec2CTCTokenizer`` of a HF CTC directory (``vocab.json`` +
    ``tokenizer_config.json`` / ``special_tokens_map.json``), for a model with ``size``
    outputs whose CTC blank is ``blank`` (config ``pad_token_id``); None when there is no
    ``vocab.json`` (a weights-only checkpoint). The pad token must be the blank: HF's
    ``batch_decode`` drops the pad token, its CTC loss the pad id."""
    directory = Path(directory)
    path = directory / VOCAB_FILE
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (directory / name).is_file():
                config.update(json.loads((directory / name).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: unreadable tokenizer files ({exc}); restore them"
                              ) from None
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise CheckpointError(f"{path}: not a token -> id mapping (multilingual per-language "
                              "vocabularies are not supported)")
    if config.get("tokenizer_class", "Wav2Vec2CTCTokenizer") != "Wav2Vec2CTCTokenizer":
        raise CheckpointError(f"{directory / 'tokenizer_config.json'}: tokenizer_class="
                              f"{config['tokenizer_class']!r}; only Wav2Vec2CTCTokenizer "
                              "vocabularies are read")
    names = {k: _token_name(config.get(f"{k}_token", default)) for k, default in
             (("pad", "<pad>"), ("bos", "<s>"), ("eos", "</s>"), ("unk", "<unk>"))}
    delimiter = _token_name(config.get("word_delimiter_token", "|")) or "|"
    pad = vocab.get(names["pad"])
    if pad != blank:
        raise CheckpointError(f"{path}: the pad token {names['pad']!r} has id {pad} but the "
                              f"model's pad_token_id (its CTC blank) is {blank}; they must be "
                              "the same id")
    if vocab and max(vocab.values()) >= size:
        raise CheckpointError(f"{path}: ids up to {max(vocab.values())} but the model has "
                              f"{size} outputs; not this model's vocabulary")
    unk = vocab.get(names["unk"], blank)
    # A special HF keeps outside vocab.json is never an output of the model: stand in the pad.
    special_ids = {k: int(vocab.get(names[k], blank)) for k in ("bos", "eos")}
    return CTCVocabTokenizer(vocab, {"pad": blank, "unk": int(unk), **special_ids}, size,
                             delimiter, bool(config.get("do_lower_case", False)),
                             {k: v for k, v in names.items() if v is not None})


def ctc_tokenizer_files(tokenizer: Tokenizer) -> dict[str, dict[str, Any]]:
    """``vocab.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` (name ->
    content) of a ``Wav2Vec2CTCTokenizer`` for a CTC run's tokenizer: an imported one as it
    came, our character tokenizer with its characters as tokens, the space as the word
    delimiter ``|`` (HF's convention) and the pad id 0 as the pad token, which is the CTC
    blank. A ConfigError for a vocabulary HF's tokenizer would read differently."""
    from seqformer.data.tokenizer import SPECIAL_TOKENS, CharTokenizer

    if isinstance(tokenizer, CTCVocabTokenizer):
        vocab, delimiter = tokenizer.vocab, tokenizer.word_delimiter
        names = {k: tokenizer.tokens.get(k) or tokenizer.inverse.get(i, f"<{k}>")
                 for k, i in tokenizer.special_ids.items()}
        lower = tokenizer.do_lower_case
    elif isinstance(tokenizer, CharTokenizer):
        delimiter = "|"
        if delimiter in tokenizer.symbols:
            raise ConfigError("the run's characters include '|', which Hugging Face's "
                              "Wav2Vec2CTCTokenizer reads as the word delimiter (a space); "
                              "retrain without it to export")
        vocab = {delimiter if s == " " else s: i for i, s in enumerate(tokenizer.symbols)}
        names = dict(zip(("pad", "bos", "eos", "unk"), SPECIAL_TOKENS))
        lower = False
    else:
        raise ConfigError(f"a {tokenizer.kind!r} tokenizer has no Wav2Vec2CTCTokenizer "
                          "counterpart; only character vocabularies export")
    specials = {f"{k}_token": v for k, v in names.items()}
    config = {"tokenizer_class": "Wav2Vec2CTCTokenizer", "processor_class": "Wav2Vec2Processor",
              "word_delimiter_token": delimiter, "do_lower_case": lower,
              "replace_word_delimiter_char": " ", **specials}
    return {VOCAB_FILE: vocab, "tokenizer_config.json": config,
            "special_tokens_map.json": specials}


def write_json_files(files: dict[str, dict[str, Any]], directory: str | Path) -> None:
    """Each ``name -> content`` of ``files`` as ``directory/name`` (UTF-8 JSON)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
