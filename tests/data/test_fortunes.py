from __future__ import annotations

import pytest

from seqformer.data.fortunes import (
    categories,
    fortune_texts,
    labelled_fortunes,
    read_fortune_file,
    split_of,
)
from seqformer.errors import DataError


@pytest.fixture
def fortune_dir(tmp_path):
    (tmp_path / "food").write_text("Eat your greens.\n%\nPie is\n\tgood.\n%\nShared line\n%\n")
    (tmp_path / "law").write_text("Objection!\n%\nShared   line\n%\nObjection!\n")
    (tmp_path / "food.dat").write_bytes(b"\x00\x01")
    (tmp_path / "food.u8").symlink_to(tmp_path / "food")
    off = tmp_path / "off"
    off.mkdir()
    (off / "rude").write_text("Guvf vf ebg13.\n%\n")
    return tmp_path


def test_reads_percent_separated_entries(fortune_dir):
    assert read_fortune_file(fortune_dir / "food") == ["Eat your greens.", "Pie is\n\tgood.",
                                                       "Shared line"]
    assert categories(fortune_dir) == ["food", "law"]  # no .dat, .u8 or off/


def test_dedupe_and_ambiguous_labels(fortune_dir):
    splits, dropped = labelled_fortunes(["food", "law"], fortune_dir)
    texts = [f.text for part in splits.values() for f in part]
    assert dropped == {"duplicates": 2, "ambiguous": 1}
    assert sorted(texts) == ["Eat your greens.", "Objection!", "Pie is\n\tgood."]
    assert "Guvf vf ebg13." not in fortune_texts(fortune_dir, exclude_held_out=False)


def test_split_is_deterministic_and_roughly_80_10_10():
    parts = [split_of(f"entry number {i}") for i in range(3000)]
    assert parts == [split_of(f"entry  number {i}") for i in range(3000)]  # whitespace-proof
    assert 0.07 < parts.count("test") / 3000 < 0.13
    assert 0.07 < parts.count("valid") / 3000 < 0.13


def test_missing_directory_names_the_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y fortunes"):
        categories(tmp_path / "nope")
