"""``errors.csv``: the rows that failed, ready to fix and feed back in as the input.

Its columns are ``line`` and ``error``, then the input's own columns. Every cell keeps the text
of the input (byte for byte, even when it was not UTF-8), except that the card number is
masked, the CVV left empty, and anything else that looks like a card number is masked too (a
row with a missing comma puts the card number in another column).

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
a spreadsheet, so it is written with a ``'`` in front, as OWASP recommends against CSV
injection. Reading the file back as input strips that ``'`` again (see :func:`restore`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._cardmath import looks_like_card_number, mask_card
from ._files import open_private, write_error

__all__ = ["ERRORS_HEADER", "ErrorsFile", "neutralise", "restore"]

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


def _mask_if_pan(match: re.Match[str]) -> str:
    return mask_card(match.group()) if looks_like_card_number(match.group()) else match.group()


class ErrorsFile:
    """The failed rows of one run, written as they fail (rewritten by every run)."""

    def __init__(self, path: Path, columns: Sequence[str], *, card: str, cvv: str) -> None:
        self.path = path
        self._columns = tuple(columns)
        self._card = card
        self._cvv = cvv
        # Undecodable input bytes were kept as surrogates; they go back out as the same bytes.
        self._file = open_private(path, append=False, errors="surrogateescape")
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
