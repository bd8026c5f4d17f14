"""Bible verses from installed SWORD modules: parallel pairs for translation, plain text for LMs.

Default pair: World English Bible (``engWEB2015eb``, Debian ``sword-text-web``) -> Reina-Valera
1909 (``spaRV1909eb``, ``sword-text-sparv``); the KJV (``engKJV2006eb``, ``sword-text-kjv``)
serves as monolingual text. All three are public domain and ship as Debian packages, so a
recipe can be reproduced offline from ``apt-get`` alone.

Why we clean the OSIS markup ourselves instead of using pysword's ``clean=True``: pysword
deletes tags and footnotes without leaving a space, which glues words (WEB John 3:16 reads
"only bornSon"), and it drops canonical Psalm superscriptions that the Spanish text keeps
as plain text, misaligning those pairs. See `clean_osis` for the rules.

Alignment is by (book, chapter, verse) key. Both texts use English verse numbering almost
everywhere, but in about a dozen chapters the RV1909 module squeezes Spanish (Hebrew-style)
numbering into its KJV slots, so every pair of a chapter is off by one verse (Jonah 2:1 holds
the English 1:17); `_misaligned_chapters` finds and drops those chapters (about 3% of pairs)
rather than let a model train, or be scored, on wrong translations.

Reading a module verse by verse through pysword decompresses a whole book per verse (30-60 s
per module); `_open_bible` memoises the last decompressed block, bringing a full module down to
well under a second, and `read_verses` still caches the extracted text as JSON because the
pairs are needed by every run of a recipe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pysword.modules import SwordModules

from seqformer.errors import DataError

DEFAULT_SWORD_DIR = "/usr/share/sword"
DEBIAN_PACKAGES = {
    "engWEB2015eb": "sword-text-web",
    "spaRV1909eb": "sword-text-sparv",
    "engKJV2006eb": "sword-text-kjv",
}
# Bump when `clean_osis` changes, so stale caches are rebuilt rather than silently reused.
_CACHE_FORMAT = 1

VerseKey = tuple[str, int, int]
Triple = tuple[str, str, str]

# --- OSIS cleaning -------------------------------------------------------------------------

# A book-closing <div eID=.. type="book"/>: whatever follows inside the same verse slot is
# back matter (the WEB appends its whole glossary to Revelation 22:21).
_BOOK_END = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\beID=)[^>]*/>.*', re.S)
# Elements dropped with their content: footnotes/cross references (rdg and catchWord only
# occur inside notes) and the speaker labels of the Song of Solomon ("Beloved").
_DROPPED = re.compile(r"<(note|speaker|rdg|catchWord|index|figure)\b[^>]*>.*?</\1>", re.S)
# Titles: canonical ones (Psalm superscriptions) are scripture and kept, others (acrostic
# letters such as "BETH") are editorial and dropped.
_TITLE = re.compile(r"<title\b([^>]*)>(.*?)</title>", re.S)
# Leftover USFM character markers in the KJV, e.g. "\nd JEHOVAH".
_USFM = re.compile(r"\\\+?[a-z]+\d*\*?")
# A closing tag directly followed by an opening one always separates two words ("ejército
# </transChange><w>Sísara", ".”</q><w>Then"), even when the source forgot the space.
_ADJACENT = re.compile(r"</[^>]+>(?=<[^/])")
# Word-level wrappers vanish without a space: they never split a word, but a space would
# detach punctuation ("world ,").
_INLINE = re.compile(r"</?(?:w|transChange|divineName|foreign|name|seg|hi|q)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
# Where something was dropped: a space, unless closing punctuation follows ("gerahs);").
_GAP = "\x00"
_GAP_BEFORE_PUNCT = re.compile(_GAP + r"+(?=[,.;:!?)\]’”])")
_SPACES = re.compile(r"[\s\x00]+")


def clean_osis(raw: str) -> str:
    """Turn one verse of OSIS markup into plain text with single spaces.

    Structural tags (line, paragraph, milestone, list) become spaces and word-level tags
    vanish; notes, speaker labels and non-canonical titles are removed with their content;
    the KJV's paragraph sign is dropped.
    """
    text = _BOOK_END.sub(" ", raw)
    text = _DROPPED.sub(_GAP, text)
    text = _TITLE.sub(lambda m: f" {m[2]} " if 'canonical="true"' in m[1] else _GAP, text)
    text = _USFM.sub(" ", text)
    text = _ADJACENT.sub(" ", text)
    text = _INLINE.sub("", text)
    text = _TAG.sub(" ", text)
    text = _GAP_BEFORE_PUNCT.sub("", text.replace("¶", " "))
    return _SPACES.sub(" ", text).strip()


# --- reading modules -----------------------------------------------------------------------


def _fix(module: str, reinstall: bool = False) -> str:
    """The one-line remedy: the Debian package when we know it, else SWORD's own installer."""
    package = DEBIAN_PACKAGES.get(module)
    if package and reinstall:
        return f"reinstall it with: apt-get install --reinstall -y {package}"
    if package:
        return f"install it with: apt-get install -y {package}"
    return "install that SWORD module (e.g. with installmgr) or fix the name"


def _find_module(module: str, sword_dir: str) -> tuple[Any, dict[str, str]]:
    """The pysword module registry and the module's .conf entries, or DataError if absent.

    Checked before any cache lookup, so a cache never hides an uninstalled module.
    """
    modules = SwordModules(sword_dir)
    try:
        found = modules.parse_modules()
    except OSError:
        found = {}
    if module not in found:
        raise DataError(f"Bible module '{module}' not found in {sword_dir}; {_fix(module)}")
    return modules, found[module]


def _open_bible(modules: Any, module: str, sword_dir: str) -> Any:
    try:
        bible = modules.get_bible_from_module(module)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"Bible module '{module}' in {sword_dir} is unreadable ({exc}); {_fix(module, True)}"
        ) from exc
    # pysword decompresses the whole block (a book) for every verse; keep the last few.
    if hasattr(bible, "_decompressed_text"):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    return bible


def _iter_books(bible: Any, module: str, books: list[str] | None) -> list[Any]:
    """pysword BookStructures in canonical order, optionally restricted to ``books``."""
    structure = bible.get_structure()
    canonical = [b for testament in structure.get_books().values() for b in testament]
    if books is None:
        return canonical
    wanted = []
    for name in books:
        match = [b for b in canonical if b.name_matches(name)]
        if not match:
            raise DataError(
                f"unknown book '{name}' in {module}; use a name like "
                f"{', '.join(repr(b.name) for b in canonical[:3])}"
            )
        wanted.append(match[0])
    order = {b.name: i for i, b in enumerate(canonical)}
    return sorted({b.name: b for b in wanted}.values(), key=lambda b: order[b.name])


def _extract(
    modules: Any, module: str, sword_dir: str, books: list[str] | None
) -> dict[VerseKey, str]:
    bible = _open_bible(modules, module, sword_dir)
    verses: dict[VerseKey, str] = {}
    for book in _iter_books(bible, module, books):
        for chapter, n_verses in enumerate(book.chapter_lengths, 1):
            raw = list(bible.get_iter(books=[book.name], chapters=[chapter], clean=False))
            if len(raw) != n_verses:
                raise DataError(
                    f"Bible module '{module}' in {sword_dir} returned {len(raw)} verses for "
                    f"{book.name} {chapter}, expected {n_verses}; reinstall it"
                )
            for verse, text in enumerate(raw, 1):
                cleaned = clean_osis(text or "")
                if cleaned:
                    verses[(book.name, chapter, verse)] = cleaned
    return verses


# --- cache ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$SEQFORMER_CACHE`` or ``~/.cache/seqformer``; shared with other seqformer caches."""
    root = os.environ.get("SEQFORMER_CACHE") or Path.home() / ".cache" / "seqformer"
    return Path(root)


def _cache_path(module: str, sword_dir: str, version: str) -> Path:
    """Keyed by module, its installed version and SWORD tree, so an upgrade invalidates it."""
    where = f"{os.path.abspath(sword_dir)}|{version}|{_CACHE_FORMAT}"
    digest = hashlib.sha1(where.encode("utf-8")).hexdigest()[:12]
    return cache_dir() / "bible" / f"{module}-{digest}.json"


def _load_cache(path: Path) -> dict[VerseKey, str] | None:
    """The cached verses, or None when absent or unreadable (then it is simply rebuilt)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["verses"]
        return {(book, int(ch), int(v)): text for book, ch, v, text in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, verses: dict[VerseKey, str]) -> None:
    """Write atomically so a killed run or a parallel reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[book, ch, v, text] for (book, ch, v), text in verses.items()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": _CACHE_FORMAT, "verses": rows}, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- public API ----------------------------------------------------------------------------


def read_verses(
    module: str, sword_dir: str = DEFAULT_SWORD_DIR, books: list[str] | None = None
) -> dict[VerseKey, str]:
    """Cleaned text per (book name, chapter, verse) in canonical order; empty verses omitted.

    Book names are pysword's ("John", "I Samuel", "Revelation of John"); ``books`` accepts
    those or OSIS ids ("1Sam") and reads only those books. Only full reads are cached, so a
    partial read never poisons the cache.
    """
    modules, conf = _find_module(module, sword_dir)
    path = _cache_path(module, sword_dir, str(conf.get("version", "")))
    if books is None:
        cached = _load_cache(path)
        if cached is not None:
            return cached
    verses = _extract(modules, module, sword_dir, books)
    if books is None:
        _write_cache(path, verses)
    return verses


def verse_key(key: VerseKey) -> str:
    """``("John", 3, 16)`` -> ``"John 3:16"``, the id used in pair files and for splits."""
    book, chapter, verse = key
    return f"{book} {chapter}:{verse}"


# Pairs whose length ratio, relative to the corpus median, falls outside these bounds signal a
# shifted chapter (one side holds the neighbouring verse, or two merged verses).
_RATIO_BOUNDS = (0.4, 2.5)


def _misaligned_chapters(
    source: dict[VerseKey, str], target: dict[VerseKey, str], keys: list[VerseKey]
) -> set[tuple[str, int]]:
    """Chapters whose verse numbering probably differs between the two modules.

    The RV1909 module squeezes Spanish (partly Hebrew-style) numbering into KJV slots: where a
    Spanish chapter starts one verse earlier, the English chapter's last verse has no Spanish
    slot and every verse of the next chapter is shifted by one (Numbers 12-13, Jonah 1-2, Job
    38-41, ...); elsewhere two verses are merged and the rest of the chapter shifts (2 Samuel 20,
    I Kings 22). Pairing those by key yields fluent but wrong translations, so we flag:
    chapters whose last verse differs (and the chapter after), and chapters holding a pair with
    an implausible length ratio.
    """
    last: dict[tuple[str, int], list[int]] = {}
    for side, verses in enumerate((source, target)):
        for book, chapter, verse in verses:
            ends = last.setdefault((book, chapter), [0, 0])
            ends[side] = max(ends[side], verse)
    suspect: set[tuple[str, int]] = set()
    for (book, chapter), (src_end, tgt_end) in last.items():
        if src_end and tgt_end and src_end != tgt_end:
            suspect |= {(book, chapter), (book, chapter + 1)}
    ratios = sorted(len(target[k]) / len(source[k]) for k in keys)
    if ratios:
        median = ratios[len(ratios) // 2]
        low, high = (bound * median for bound in _RATIO_BOUNDS)
        suspect |= {k[:2] for k in keys if not low <= len(target[k]) / len(source[k]) <= high}
    return suspect


def bible_pairs(
    source_module: str = "engWEB2015eb",
    target_module: str = "spaRV1909eb",
    sword_dir: str = DEFAULT_SWORD_DIR,
    books: list[str] | None = None,
    drop_misaligned: bool = True,
) -> tuple[list[Triple], dict[str, int]]:
    """Verse-aligned ``(key, source, target)`` triples in canonical order, plus statistics.

    Only books present in both modules are aligned (the WEB's deuterocanon has no Spanish
    side). With ``drop_misaligned`` the chapters `_misaligned_chapters` flags are left out.
    Stats: ``source_verses``/``target_verses`` non-empty verses read from each module;
    ``aligned`` pairs returned; ``dropped_empty`` keys of shared books with text on one side
    only (an empty slot or a versification difference); ``dropped_misaligned`` pairs left out
    by the chapter check; ``source_only_books`` verses in books the target lacks.
    """
    source = read_verses(source_module, sword_dir, books)
    target = read_verses(target_module, sword_dir, books)
    shared_books = {k[0] for k in source} & {k[0] for k in target}
    source_shared = [k for k in source if k[0] in shared_books]
    target_shared = sum(k[0] in shared_books for k in target)
    keys = [k for k in source_shared if k in target]
    suspect = _misaligned_chapters(source, target, keys) if drop_misaligned else set()
    pairs = [(verse_key(k), source[k], target[k]) for k in keys if k[:2] not in suspect]
    stats = {
        "source_verses": len(source),
        "target_verses": len(target),
        "aligned": len(pairs),
        "dropped_empty": len(source_shared) + target_shared - 2 * len(keys),
        "dropped_misaligned": len(keys) - len(pairs),
        "source_only_books": len(source) - len(source_shared),
    }
    return pairs, stats


def split_of(key: str) -> str:
    """Split of one verse key: ``sha1(key) % 1000`` below 10 -> test, below 20 -> valid.

    A hash of the key (not a shuffle) keeps each verse in the same split whatever subset of
    books or modules is read, and Python's salted ``hash`` would change between runs.
    """
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 1000
    return "test" if bucket < 10 else "valid" if bucket < 20 else "train"


def split_pairs(keys: list[str]) -> dict[str, list[int]]:
    """Indices into ``keys`` per split ("train", "valid", "test"; about 98/1/1 percent).

    Returns indices rather than triples so the same split applies to any list aligned with
    ``keys`` (pairs, tokenised tensors, ...).
    """
    splits: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for i, key in enumerate(keys):
        splits[split_of(key)].append(i)
    return splits


def plain_text(
    module: str = "engKJV2006eb",
    sword_dir: str = DEFAULT_SWORD_DIR,
    books: list[str] | None = None,
) -> str:
    """One cleaned verse per line in canonical order (newline-terminated), for LM training."""
    return "".join(f"{text}\n" for text in read_verses(module, sword_dir, books).values())
