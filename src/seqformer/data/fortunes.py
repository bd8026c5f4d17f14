"""Debian's fortune cookies: real English text, human-sorted into categories by file.

``/usr/share/games/fortunes/<category>`` (packages ``fortunes`` and ``fortunes-min``) holds
entries separated by lines containing only ``%``; the file name is the category (art,
computers, food, law, love, science, sports, ...). That makes a labelled classification task
(:func:`labelled_fortunes`) and unlabelled pretraining text (:func:`fortune_texts`).

Pitfalls handled here:

- ``*.dat`` are strfile indexes and ``*.u8`` symlinks to the same text: only extension-less
  regular files are categories.
- Offensive fortunes (``fortunes-off``) live in an ``off/`` sub-directory, rot13-encoded;
  subdirectories are never read, so they can neither leak in as garbled text nor as labels.
- A few entries appear in several files (or twice in one): duplicates are kept once, and an
  entry found under two different categories is dropped from the labelled set, since its label
  is ambiguous.
- The split is by a hash of the normalised text (not a shuffle), so it is the same on every
  machine and for any subset of categories, and duplicates cannot straddle train and test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from seqformer.errors import DataError

FORTUNE_DIR = "/usr/share/games/fortunes"
DEFAULT_CATEGORIES = ("art", "computers", "food", "law", "love", "science", "sports")
_INSTALL = "install them with: sudo apt-get install -y fortunes fortunes-min"


@dataclass(frozen=True)
class Fortune:
    text: str
    category: str


def normalise(text: str) -> str:
    """Whitespace collapsed: layout (tabs before attributions) differs between copies."""
    return " ".join(text.split())


def split_of(text: str) -> str:
    """``sha1(normalised text) % 100``: below 10 -> test, below 20 -> valid, else train."""
    bucket = int(hashlib.sha1(normalise(text).encode("utf-8")).hexdigest(), 16) % 100
    return "test" if bucket < 10 else "valid" if bucket < 20 else "train"


def _check_dir(directory: str | Path) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise DataError(f"{path}: no fortune files; {_INSTALL}")
    return path


def categories(directory: str | Path = FORTUNE_DIR) -> list[str]:
    """Category names: extension-less regular files (not .dat indexes, .u8 links, off/)."""
    path = _check_dir(directory)
    return sorted(p.name for p in path.iterdir()
                  if p.is_file() and not p.is_symlink() and "." not in p.name)


def read_fortune_file(path: str | Path) -> list[str]:
    """Entries of one ``%``-separated file, stripped of surrounding blank lines; UTF-8, with a
    Latin-1 fallback for the few old files that are not."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    entries = re.split(r"^%[ \t]*$", text.replace("\r\n", "\n"), flags=re.M)
    return [e.strip("\n") for e in entries if e.strip()]


def read_fortunes(names: list[str] | tuple[str, ...] | None = None,
                  directory: str | Path = FORTUNE_DIR) -> list[Fortune]:
    """Every entry of the given categories (all by default), in file order, duplicates kept."""
    path = _check_dir(directory)
    available = categories(path)
    chosen = list(names) if names else available
    missing = [n for n in chosen if n not in available]
    if missing:
        raise DataError(f"{path}: no fortune file {', '.join(missing)}; available: "
                        f"{', '.join(available)}")
    return [Fortune(text, name) for name in chosen for text in read_fortune_file(path / name)]


def labelled_fortunes(names: list[str] | tuple[str, ...] = DEFAULT_CATEGORIES,
                      directory: str | Path = FORTUNE_DIR
                      ) -> tuple[dict[str, list[Fortune]], dict[str, int]]:
    """Deduplicated entries per split ("train", "valid", "test") and counts of what was dropped.

    Returns the splits and ``{"duplicates": n, "ambiguous": n}``.
    """
    seen: dict[str, Fortune] = {}
    labels: dict[str, set[str]] = {}
    duplicates = 0
    for f in read_fortunes(names, directory):
        key = normalise(f.text)
        if key in seen:
            duplicates += 1
        else:
            seen[key] = f
        labels.setdefault(key, set()).add(f.category)
    splits: dict[str, list[Fortune]] = {"train": [], "valid": [], "test": []}
    ambiguous = 0
    for key, f in seen.items():
        if len(labels[key]) > 1:
            ambiguous += 1
            continue
        splits[split_of(f.text)].append(f)
    return splits, {"duplicates": duplicates, "ambiguous": ambiguous}


def fortune_texts(directory: str | Path = FORTUNE_DIR,
                  exclude_held_out: bool = True) -> list[str]:
    """Unique entries of every category, for pretraining. ``exclude_held_out`` drops the
    entries whose hash puts them in valid/test, so a model pretrained here has never read the
    texts the fortune classifier is scored on."""
    seen: set[str] = set()
    out = []
    for f in read_fortunes(None, directory):
        key = normalise(f.text)
        if key in seen or (exclude_held_out and split_of(f.text) != "train"):
            continue
        seen.add(key)
        out.append(f.text)
    return out
