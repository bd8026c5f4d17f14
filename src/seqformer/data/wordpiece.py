"""BERT's WordPiece tokenizer, trained with Hugging Face ``tokenizers``, behind seqformer's
:class:`~seqformer.data.tokenizer.Tokenizer` interface.

The fixed special ids of every seqformer vocabulary are read the BERT way: pad=0 is ``[PAD]``,
bos=1 is ``[CLS]``, eos=2 is ``[SEP]``, unk=3 is ``[UNK]``; WordPiece adds ``[MASK]`` at 4 for
masked language modelling. Text is lower-cased and accents stripped (BERT-uncased's
normaliser): on a few megabytes of text, case doubles the vocabulary for little gain.
``[MASK]`` written in a text is recognised as the mask token, so ``fill-mask`` prompts are
plain strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seqformer.data.tokenizer import PAD_ID, TOKENIZER_FILE, Tokenizer
from seqformer.errors import ConfigError, DataError

WORDPIECE_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
MASK_ID = 4
WORDPIECE_FILE = "wordpiece.json"  # the plain HF file, readable by tokenizers.Tokenizer too
WORD_START = "\u2581"  # marks word-initial pieces while the merges are learned


class WordPieceTokenizer(Tokenizer):
    """Thin wrapper over a trained HF WordPiece tokenizer (BERT normaliser and pre-tokeniser)."""

    kind = "wordpiece"

    def __init__(self, hf: Any) -> None:
        got = [hf.token_to_id(t) for t in WORDPIECE_SPECIALS]
        if got != list(range(len(WORDPIECE_SPECIALS))):
            raise ValueError(f"WordPiece special tokens must have ids 0-4, got {got}")
        self.hf = hf

    @property
    def mask_id(self) -> int:
        return MASK_ID

    @property
    def n_special(self) -> int:
        """Ids below this are specials: never masked, never a random replacement."""
        return len(WORDPIECE_SPECIALS)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """Ids of pre-split words and, per id, the index of its word (for tagging labels)."""
        enc = self.hf.encode(list(words), is_pretokenized=True, add_special_tokens=False)
        return list(enc.ids), [int(w) for w in enc.word_ids]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's (start, end) character span in ``text`` (for span QA)."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]

    def decode(self, ids: Sequence[int]) -> str:
        # [MASK] (id 4) is kept: fill-mask shows where the blank was.
        return self.hf.decode([int(i) for i in ids if int(i) > PAD_ID + 3],
                              skip_special_tokens=False)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [str(self.hf.id_to_token(int(i))) for i in ids]

    def _content(self) -> dict[str, Any]:
        vocab = json.loads(self.hf.to_str())["model"]["vocab"]
        return {"kind": self.kind, "vocab": [t for t, _ in sorted(vocab.items(),
                                                                  key=lambda kv: kv[1])]}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / WORDPIECE_FILE))
        text = json.dumps({"kind": self.kind, "file": WORDPIECE_FILE}, indent=1)
        (directory / TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000,
                    min_frequency: int = 2) -> WordPieceTokenizer:
    """Learn a WordPiece vocabulary from training texts only (``##`` marks continuations).

    Same texts, same vocabulary, in every process: HF ``tokenizers``' own WordPieceTrainer
    breaks ties between equally frequent merges by hash order, which changes from process to
    process. Its BPE trainer with a word-start marker does not, so the merges are learned that
    way (words split as BERT splits them, each prefixed with ``▁``) and turned into
    WordPiece entries -- what WordPieceTrainer does internally: a piece that starts a word keeps
    its text, any other piece gets ``##``. Every character seen is kept both ways, so no word
    of the training alphabet becomes [UNK]. The vocabulary can exceed ``vocab_size`` by those
    characters.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size <= len(WORDPIECE_SPECIALS):
        raise ConfigError(f"wordpiece vocab_size must be > {len(WORDPIECE_SPECIALS)}, got "
                          f"{vocab_size}; raise it")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError("cannot train a wordpiece tokenizer: no text given; check the corpus")
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True,
                                            clean_text=True, handle_chinese_chars=True)
    bpe = HFTokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always", split=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=WORDPIECE_SPECIALS, show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    learned = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    pieces: dict[str, int] = {t: i for i, t in enumerate(WORDPIECE_SPECIALS)}

    def add(piece: str) -> None:
        if piece and piece not in pieces:
            pieces[piece] = len(pieces)

    for token, _ in learned:
        if token in WORDPIECE_SPECIALS or token == WORD_START:
            continue
        add(token[1:] if token.startswith(WORD_START) else "##" + token)
    for token, _ in learned:  # single characters: usable at a word start and inside a word
        char = token[1:] if token.startswith(WORD_START) else token
        if len(char) == 1 and token not in WORDPIECE_SPECIALS:
            add(char)
            add("##" + char)
    hf = HFTokenizer(models.WordPiece(vocab=pieces, unk_token="[UNK]",
                                      max_input_chars_per_word=100))
    hf.normalizer = normalizer
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##")
    hf.add_special_tokens(WORDPIECE_SPECIALS)
    return WordPieceTokenizer(hf)
