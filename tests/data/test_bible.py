"""Bible verse extraction from the SWORD modules installed by sword-text-{web,sparv,kjv}.

Tests read single books (a few hundredths of a second each); only the cache test reads a
whole module, which takes well under a second thanks to the block memoisation in bible.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from seqformer.data import bible
from seqformer.data.bible import (
    bible_pairs,
    clean_osis,
    plain_text,
    read_verses,
    split_of,
    split_pairs,
)
from seqformer.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's ~/.cache from tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEQFORMER_CACHE", str(cache))
    return cache


# --- markup cleaning (synthetic, no module needed) -------------------------------------------


def test_dropped_note_leaves_a_space_between_words_but_not_before_punctuation() -> None:
    raw = (
        '<q who="Jesus"><w lemma="x">only</w> born</q><note placement="foot">a note</note>'
        '<q who="Jesus"><w lemma="y">Son</w>, twenty <w>gerahs</w><note>0.5 g</note>);</q>'
    )
    assert clean_osis(raw) == "only born Son, twenty gerahs);"
    # WEB Genesis 4:1: a note between two bare words, with no tag to fall back on.
    assert clean_osis("conceived,<note>Cain sounds like…</note>and gave") == "conceived, and gave"


def test_adjacent_elements_are_separate_words() -> None:
    raw = '<w>ejército</w><transChange type="added">se llamaba</transChange><w>Sísara</w>'
    assert clean_osis(raw) == "ejército se llamaba Sísara"
    assert clean_osis('<w>clean</w>.”</q><w>Then</w>') == "clean.” Then"


def test_titles_speakers_paragraph_marks_and_back_matter() -> None:
    raw = (
        '<title canonical="true" type="psalm">A Psalm by David.</title> <l sID="1"/>Yahweh!'
        "<l eID=\"1\"/> <title><foreign>ב BETH.</foreign></title><speaker>Beloved</speaker>"
        ' ¶ Amen. \\nd <w>LORD</w></divineName> <chapter eID="Rev.22"/>'
        '<div canonical="true" eID="g1" osisID="Rev" type="book"/> Glossary: Abaddon ...'
    )
    assert clean_osis(raw) == "A Psalm by David. Yahweh! Amen. LORD"


# --- real modules ----------------------------------------------------------------------------


def test_web_john_3_16_has_proper_spacing() -> None:
    verses = read_verses("engWEB2015eb", books=["John"])
    text = verses[("John", 3, 16)]
    assert "his only born Son, that whoever believes" in text
    assert "  " not in text and text == text.strip()
    assert all("<" not in t and ">" not in t for t in verses.values())


def test_kjv_plain_text_is_clean() -> None:
    text = plain_text("engKJV2006eb", books=["Genesis", "Psalms"])
    lines = text.splitlines()
    assert len(lines) == 1533 + 2461  # every KJV verse of both books, one per line
    assert lines[0] == "In the beginning God created the heaven and the earth."
    assert "¶" not in text and "\\" not in text and "<" not in text
    assert all(line and line == line.strip() and "  " not in line for line in lines)
    psalms = read_verses("engKJV2006eb", books=["Ps"])
    assert psalms[("Psalms", 3, 1)].startswith("A Psalm of David, when he fled from Absalom")
    assert psalms[("Psalms", 119, 9)].startswith("Wherewithal shall a young man")


def test_john_alignment_uses_keys_present_in_both() -> None:
    pairs, stats = bible_pairs(books=["John"])
    web = read_verses("engWEB2015eb", books=["John"])
    rv = read_verses("spaRV1909eb", books=["John"])
    keys = {bible.verse_key(k): k for k in web}
    assert len(pairs) == stats["aligned"] == 879
    assert stats["dropped_empty"] == stats["dropped_misaligned"] == 0
    assert pairs[0][0] == "John 1:1" and pairs[-1][0] == "John 21:25"
    for key, source, target in pairs:
        assert web[keys[key]] == source and rv[keys[key]] == target
    assert dict((k, t) for k, _, t in pairs)["John 3:16"].startswith("Porque de tal manera")


def test_shifted_spanish_chapters_are_dropped() -> None:
    # RV1909 Jonah 2:1 holds the English 1:17 ("the great fish"), so pairing by key is wrong.
    raw_pairs, raw_stats = bible_pairs(books=["Jonah"], drop_misaligned=False)
    assert dict((k, t) for k, _, t in raw_pairs)["Jonah 2:1"].startswith("MAS Jehová")
    assert raw_stats["dropped_empty"] == 1  # Jonah 1:17 has no Spanish slot

    pairs, stats = bible_pairs(books=["Jonah"])
    chapters = {key.split(":")[0] for key, _, _ in pairs}
    assert chapters == {"Jonah 3", "Jonah 4"}
    assert stats["dropped_misaligned"] == 16 + 10
    assert stats["aligned"] + stats["dropped_misaligned"] == len(raw_pairs)


def test_chapter_with_an_implausible_length_ratio_is_dropped() -> None:
    # Judges 14 has the same verse count on both sides, but RV1909 14:20 holds 14:19's text
    # (the merge happened earlier), which only the length ratio reveals.
    pairs, stats = bible_pairs(books=["Judges"])
    assert stats["dropped_empty"] == 0 and stats["dropped_misaligned"] == 20
    assert not any(key.startswith("Judges 14:") for key, _, _ in pairs)


def test_missing_module_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_verses("spaRV1909eb", sword_dir=str(tmp_path))
    message = str(err.value)
    assert "'spaRV1909eb' not found in " + str(tmp_path) in message
    assert "apt-get install -y sword-text-sparv" in message and "\n" not in message
    with pytest.raises(DataError, match="sword-text-web"):
        bible_pairs(sword_dir=str(tmp_path))


def test_unknown_book_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown book 'Johnn'"):
        read_verses("engWEB2015eb", books=["Johnn"])


def test_full_reads_are_cached_partial_reads_are_not(
    _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_verses("spaRV1909eb", books=["John"])
    assert not _private_cache.exists()

    verses = read_verses("spaRV1909eb")
    assert len(verses) == 31084  # 31102 KJV slots minus 18 empty ones
    files = list((_private_cache / "bible").iterdir())
    assert [f.suffix for f in files] == [".json"]  # no temp file left behind

    def no_extraction(*args: object) -> None:
        raise AssertionError("second full read should come from the cache")

    monkeypatch.setattr(bible, "_extract", no_extraction)
    cached = read_verses("spaRV1909eb")
    assert cached == verses and list(cached) == list(verses)  # same canonical order


def test_split_is_deterministic_disjoint_and_about_one_percent() -> None:
    keys = [f"Book {c}:{v}" for c in range(1, 101) for v in range(1, 101)]
    splits = split_pairs(keys)
    parts = [set(splits[name]) for name in ("train", "valid", "test")]
    assert sum(map(len, parts)) == len(keys) and set().union(*parts) == set(range(len(keys)))
    assert 50 <= len(splits["valid"]) <= 150 and 50 <= len(splits["test"]) <= 150

    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    again = split_pairs(shuffled)
    for name in splits:  # a key's split does not depend on list order
        assert {keys[i] for i in splits[name]} == {shuffled[i] for i in again[name]}
    # Pinned so a changed rule (which would leak test verses into training) fails loudly.
    assert [split_of(k) for k in ("John 2:7", "John 2:18", "John 3:16")] == [
        "valid",
        "test",
        "train",
    ]
