"""``errors.csv``: the rows that failed, ready to fix and feed back in as the input.

Its columns are ``line`` and ``error``, then the input's own columns. Every cell keeps the text
of the input (byte for byte, even when it was not UTF-8), except that the card number is
masked, the CVV left empty, and anything else that looks like a card number is masked too (a
row with a missing comma puts the card number in another column).

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
a spreadsheet, so it is written with a ``'`` in front, as OWASP recommends against CSV
injection. Reading the file back as input strips that ``'`` again (see :func:`restore`).

Each run writes a new file. An earlier run's is kept whole under another name (it may hold an
operator's fixes in progress), unless it lists no row; a file that is not an errors file (another
job's results, a device) is never taken over: the command refuses it before it starts.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._cardmath import looks_like_card_number, mask_card
from ._files import (
    create_private,
    free_name,
    is_regular_or_absent,
    not_a_regular_file,
    set_aside,
    write_error,
)

__all__ = ["ERRORS_HEADER", "ErrorsFile", "neutralise", "replaceable", "restore"]

ERRORS_HEADER = ("line", "error")
"""The columns the errors file puts before the input's own."""

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PAN_LIKE = re.compile(r"(?<![+\d])\d(?:[ -]?\d){11,18}(?!\d)")
"""12 to 19 digits, maybe grouped, not after a ``+`` (an E.164 phone number)."""


def neutralise(cell: str) -> str:
    """The cell as a spreadsheet shows it as text: a ``'`` before a formula's first character."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def restore(cell: str) -> str:
    """Undo :func:`neutralise` (for an errors file read back as the input)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_STARTS) else cell


def replaceable(path: Path) -> bool:
    """Nothing is at ``path``, or an empty file, or an errors file (its header starts
    ``line,error``): what a run may keep aside to write its own errors file."""
    if not is_regular_or_absent(path):
        return False
    try:
        with path.open("rb") as stream:
            first = stream.readline(4096)
    except FileNotFoundError:
        return True
    cells = first.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").split(b",")
    return first == b"" or tuple(cells[: len(ERRORS_HEADER)]) == tuple(
        name.encode() for name in ERRORS_HEADER
    )


def _make_room(path: Path) -> Path | None:
    """Clear ``path`` for a new errors file; returns where an earlier one is kept, if kept.

    One that lists no row holds nothing to keep. Any other is renamed after the time it was
    last written: ``errors.20261104T093000Z.csv``.
    """
    if not is_regular_or_absent(path):
        raise not_a_regular_file(path)
    try:
        with path.open("rb") as stream:
            stream.readline()
            empty = stream.read(1) == b""
    except FileNotFoundError:
        return None
    if empty:
        path.unlink()
        return None
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    kept_as = free_name(path, written.strftime("%Y%m%dT%H%M%SZ"))
    set_aside(path, kept_as)
    return kept_as


def _mask_if_pan(match: re.Match[str]) -> str:
    return mask_card(match.group()) if looks_like_card_number(match.group()) else match.group()


class ErrorsFile:
    """The failed rows of one run, written as they fail, to a new file (see the module)."""

    def __init__(self, path: Path, columns: Sequence[str], *, card: str, cvv: str) -> None:
        self.path = path
        self._columns = tuple(columns)
        self._card = card
        self._cvv = cvv
        try:
            self.kept_as = _make_room(path)
            # Undecodable input bytes were kept as surrogates; they go back out as the same bytes.
            self._file = create_private(path, errors="surrogateescape")
        except OSError as error:
            raise write_error(path, error) from error
        self._writer = csv.writer(self._file)
        self.rows = 0
        self._failed = False
        self._write_row((*ERRORS_HEADER, *self._columns))

    def mask(self, values: Mapping[str, str]) -> dict[str, str]:
        """The row as it may be written: safe to keep while its record is in flight."""
        masked: dict[str, str] = {}
        for column in self._columns:
            value = values.get(column, "")
            if column == self._cvv:
                value = ""
            elif column == self._card:
                value = mask_card(value) if value else ""
            else:
                value = _PAN_LIKE.sub(_mask_if_pan, value)
            masked[column] = value
        return masked

    def write(self, *, line: int, reason: str, masked: Mapping[str, str]) -> None:
        self._write_row((str(line), reason, *(masked.get(c, "") for c in self._columns)))
        self.rows += 1

    def _write_row(self, cells: Sequence[str]) -> None:
        try:
            self._writer.writerow([neutralise(cell) for cell in cells])
            self._file.flush()
        except OSError as error:
            self._failed = True
            raise write_error(self.path, error) from error

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            if not self._failed:
                raise
            # Closing flushed what a failed write left behind, and failed again: said already.
