"""What the CLI tests share: ``--set`` arguments from overrides and reading the one-line error
a failed command prints (imported by the test modules of this directory)."""

from __future__ import annotations


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
