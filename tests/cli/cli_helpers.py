"""What the CLI tests share: ``--set`` arguments from overrides, reading the one-line error
a failed command prints, and a user's own recordings (imported by the test modules of this
directory)."""

from __future__ import annotations

from pathlib import Path

RECORDED_WORDS = ["apple", "banana", "cherry", "dates", "elder", "figs", "grape", "hazel",
                  "kiwi", "lemon"]


def sets(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [a for s in overrides for a in ("--set", s)]


def error_line(capsys) -> str:
    """The last line a failed command wrote to stderr (its one-line error)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def one_line_error(capsys, code: int) -> str:
    """Check a command failed as a user error -- exit code 2, exactly one stderr line starting
    ``seqformer: error:`` -- and return that line."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("seqformer: error: "), err
    return err


def write_recordings(root: Path) -> None:
    """Ten words spoken by espeak-ng as ``root/WORD.wav``, listed (``path.wav<TAB>word``) in
    ``root/train.tsv`` and, the first three, in ``root/test.tsv``: "your own recordings"."""
    from seqformer.data import speech

    rows = []
    for w in RECORDED_WORDS:
        speech.write_wav(root / f"{w}.wav", speech.synthesize(w, "en-us+m3"))
        rows.append(f"{w}.wav\t{w}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "test.tsv").write_text("\n".join(rows[:3]) + "\n")
