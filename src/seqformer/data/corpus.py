"""Reading parallel corpora and inference inputs into `Pair`s.

Every reader keeps the file and line of each example (`Pair.where`) because the most common
failure in sequence learning is a malformed corpus line, and "train.tsv:17" is what the user
needs to fix it. Rules shared by all readers:

* files must be UTF-8 (a BOM is tolerated); CRLF line endings are fine;
* blank lines are skipped, so a trailing empty line or paragraph gaps never become examples;
* each side is stripped of surrounding whitespace, because an invisible trailing space would
  become a token and silently cost exact-match accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqformer.errors import DataError

_FIX = "fix the line or remove it"


@dataclass(frozen=True)
class Pair:
    """One example: `refs` lists every acceptable target (empty means only `target`)."""

    source: str
    target: str
    refs: tuple[str, ...] = ()
    where: str = ""

    @property
    def references(self) -> tuple[str, ...]:
        """What metrics compare against, so multi-reference sets need no special casing."""
        return self.refs or (self.target,)


def read_text(path: str | Path, kind: str, fix: str) -> str:
    """A whole UTF-8 file, or a one-line DataError naming it: ``kind`` says what the file is
    ("text file", "prompt file") and ``fix`` where to correct the path."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such {kind}; fix {fix}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to "
                        "UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def _read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 file without line endings; errors name the file (and line)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; pass a text file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check permissions") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    out: list[str] = []
    for n, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{n}: not valid UTF-8 (byte {e.start + 1} of the line); "
                "re-save the file as UTF-8"
            ) from None
        if n == 1:
            text = text.removeprefix("\ufeff")
        out.append(text.removesuffix("\r"))
    return out


def read_tsv(path: str | Path) -> list[Pair]:
    """Read ``source<TAB>target`` lines; anything else is a DataError at that line."""
    pairs: list[Pair] = []
    for n, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            found = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
            raise DataError(f"{path}:{n}: expected 'source<TAB>target', found {found}; {_FIX}")
        source, target = fields[0].strip(), fields[1].strip()
        for side, value in (("source", source), ("target", target)):
            if not value:
                raise DataError(f"{path}:{n}: empty {side}; {_FIX}")
        pairs.append(Pair(source, target, where=f"{path}:{n}"))
    if not pairs:
        raise DataError(f"{path}: no examples; add 'source<TAB>target' lines")
    return pairs


def read_aligned(source_path: str | Path, target_path: str | Path) -> list[Pair]:
    """Read two line-aligned files (line i of one translates line i of the other).

    Counts must match exactly: an off-by-one shifts every later pair and quietly ruins
    training, so it is an error rather than a truncation. A line blank in both files is
    skipped; blank in only one is an error, since it is almost always a misalignment.
    """
    sources, targets = _read_lines(source_path), _read_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}; "
            "the files must be line-aligned"
        )
    pairs: list[Pair] = []
    for n, (source, target) in enumerate(zip(sources, targets, strict=True), start=1):
        source, target = source.strip(), target.strip()
        if not source and not target:
            continue
        if not source or not target:
            empty, other = (source_path, target_path) if not source else (target_path, source_path)
            raise DataError(f"{empty}:{n}: empty line but {other}:{n} is not; {_FIX} in both")
        pairs.append(Pair(source, target, where=f"{source_path}:{n}"))
    if not pairs:
        raise DataError(f"{source_path}: no examples; add lines to both files")
    return pairs


def read_lines_numbered(path: str | Path) -> list[tuple[int, str]]:
    """Non-blank inference inputs with their 1-based line numbers, for error messages."""
    numbered = [(n, line.strip()) for n, line in enumerate(_read_lines(path), start=1)]
    return [(n, text) for n, text in numbered if text]


def read_lines(path: str | Path) -> list[str]:
    """Non-blank inference inputs; an empty file gives an empty list, not an error."""
    return [text for _, text in read_lines_numbered(path)]
