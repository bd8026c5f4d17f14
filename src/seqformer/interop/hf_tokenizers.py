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
    dispatches here on the kinds ``hf`` and ``sentencepiece``)."""
    directory = Path(directory)
    kind = meta["kind"]
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
