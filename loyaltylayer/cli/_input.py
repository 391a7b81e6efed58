"""Reading the input file: CSV or JSONL, streamed, with ``--map`` column renaming and row checks.

Rows are read one at a time and never kept, so a file of millions of cardholders costs the same
memory as a file of ten. Every problem with a row becomes a per-row error naming the column (or
the line), never its value; problems with the file as a whole (empty, unreadable, required
columns missing) are :class:`InputError`, a usage error.

A CSV row is one line: no field of a record may hold a line break, so a quote left open is an
error of the line it opens on, and the lines after it are read as the rows they are (not
swallowed into one cell until the next quote). The rows counted are the data rows a spreadsheet
shows. An errors file of an earlier run is a valid input: its own ``line`` and ``error``
columns are ignored and the ``'`` it put before formula-like cells is taken off.

Every line and every cell read is held as a :class:`~loyaltylayer.Secret` from the moment it is
read: a row holds a card number and a CVV, and a traceback that shows local variables (rich's
``show_locals``, Sentry) must show none of them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from .._enroll_models import RECORD_FIELDS, EnrollRecord, record_key
from .._errors import ValidationError
from .._secrets import Secret
from .._seen import SeenKeys
from ._errors_file import ERRORS_HEADER, restore
from ._shard import Shard

__all__ = [
    "MAX_FIELD",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "CheckedRow",
    "InputError",
    "InputFile",
    "parse_mapping",
]

OPTIONAL_FIELDS = ("phone", "country", "reference")
REQUIRED_FIELDS = tuple(field for field in RECORD_FIELDS if field not in OPTIONAL_FIELDS)
MAX_FIELD = 1024
"""No field of a record comes near this; a longer one is a broken row, not a long name."""

_JSONL_SUFFIXES = {".jsonl", ".ndjson"}


class InputError(Exception):
    """The input file cannot be used at all (as opposed to one bad row)."""


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["Card No=card_number", ...]`` -> ``{"Card No": "card_number"}``, checked."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.rpartition("=")
        column, field = column.strip(), field.strip()
        if not sep or not column:
            raise InputError(f"--map {pair!r}: expected COLUMN=FIELD")
        if field not in RECORD_FIELDS:
            raise InputError(f"--map {pair!r}: {field!r} is not one of {', '.join(RECORD_FIELDS)}")
        if field in mapping.values():
            raise InputError(f"--map: two columns are mapped to {field!r}")
        mapping[column] = field
    return mapping


@attrs.frozen(kw_only=True)
class CheckedRow:
    """One input row after every local check.

    ``values`` is the row as read, by input column: it still holds the card number and CVV, so
    it must only ever be written out through the errors file's masking.
    """

    line: int
    key: str
    record: EnrollRecord | None
    errors: Mapping[str, str]
    values: Mapping[str, str] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class _RawRow:
    line: int
    values: dict[str, str] = attrs.field(repr=False)
    errors: dict[str, str]


def _csv_cells(line: str) -> list[str]:
    """The cells of one line of CSV, as secrets; a quote it leaves open is a ``csv.Error``."""
    return [Secret(cell) for cell in next(csv.reader((line,), strict=True), [])]


def _secret_strings(obj: dict[str, object]) -> dict[str, object]:
    """A ``json.loads`` object hook: every string value of a JSON line read as a secret."""
    return {key: Secret(value) if isinstance(value, str) else value for key, value in obj.items()}


def _csv_problem(error: csv.Error) -> str:
    if str(error) == "unexpected end of data":
        return "a quoted cell is not closed on this line"
    return f"is not valid CSV ({error})"


_DATA_LIKE = re.compile(r"[0-9]{3}|@")
"""Three digits in a row (a card number, a CVV, a phone) or an ``@`` (an email): data, which
no column name of ours holds."""
_NO_HEADER = (
    "{path}: its first line looks like a record, not a header row (it holds a number or an "
    "email address; not shown here): start the file with a header row naming the columns "
    f"({','.join(RECORD_FIELDS)})"
)


def _looks_like_a_record(header: Sequence[str]) -> bool:
    """The first line of a CSV holds cardholder data: the header row is missing.

    Then no cell of it may be echoed in an error: it may be a card number or a CVV.
    """
    return any(_DATA_LIKE.search(cell) for cell in header)


def _has_surrogates(text: str) -> bool:
    """Undecodable bytes, kept by ``surrogateescape`` so that one bad row does not end the file."""
    return any("\udc80" <= char <= "\udcff" for char in text)


@attrs.frozen(kw_only=True)
class InputFile:
    """An input file with its column mapping resolved; iterate it as often as needed."""

    path: Path
    format: Literal["csv", "jsonl"]
    columns: tuple[str, ...]
    """The input's own column names (the CSV header; for JSONL, each record field's key)."""
    by_field: Mapping[str, str]
    """Record field -> the input column it is read from."""
    errors_file: bool = False
    """The input is an errors file of an earlier run (its header starts ``line,error``)."""
    shard: Shard | None = None
    """Only the rows whose key hashes to this shard are read (``--shard``)."""

    @property
    def echoed_columns(self) -> tuple[str, ...]:
        """The columns an errors file of this input repeats (not an errors file's own two)."""
        if self.errors_file:
            return self.columns[len(ERRORS_HEADER) :]
        return self.columns

    @classmethod
    def open(cls, path: Path, mapping: Mapping[str, str]) -> InputFile:
        """Check the file and its header; raise :class:`InputError` if it cannot be used."""
        try:
            with path.open("rb") as stream:
                head = stream.read(4096)
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror}") from None
        if not head.strip():
            raise InputError(f"{path} is empty: expected a CSV header row or JSON lines")
        by_field = {field: field for field in RECORD_FIELDS}
        by_field.update({field: column for column, field in mapping.items()})
        is_jsonl = path.suffix.lower() in _JSONL_SUFFIXES or (
            path.suffix.lower() != ".csv" and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
        )
        if is_jsonl:
            columns = tuple(by_field[field] for field in RECORD_FIELDS)
            return cls(path=path, format="jsonl", columns=columns, by_field=by_field)
        header = cls._csv_header(path)
        unknown = [column for column in mapping if column not in header]
        if unknown:
            raise InputError(f"--map names columns {unknown} that are not in the header of {path}")
        missing = [by_field[field] for field in REQUIRED_FIELDS if by_field[field] not in header]
        if missing and _looks_like_a_record(header):
            raise InputError(_NO_HEADER.format(path=path))
        if missing:
            raise InputError(
                f"{path} has no column {', '.join(repr(c) for c in missing)} in its header row; "
                "rename the columns or map them with --map COLUMN=FIELD"
            )
        return cls(
            path=path,
            format="csv",
            columns=header,
            by_field=by_field,
            errors_file=header[: len(ERRORS_HEADER)] == ERRORS_HEADER,
        )

    @staticmethod
    def _csv_header(path: Path) -> tuple[str, ...]:
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
            try:
                header = tuple(cell.strip() for cell in _csv_cells(stream.readline()))
            except csv.Error as error:
                raise InputError(f"{path}: the header row is not valid CSV ({error})") from None
        if any(_has_surrogates(column) for column in header):
            raise InputError(f"{path}: the header row is not UTF-8 text; save the file as UTF-8")
        duplicated = sorted({column for column in header if header.count(column) > 1})
        if duplicated and _looks_like_a_record(header):
            raise InputError(_NO_HEADER.format(path=path))
        if duplicated:
            raise InputError(f"{path}: the header repeats the column(s) {duplicated}")
        return header

    def count(self) -> int:
        """How many rows the file (or its shard) has (a streaming pass; nothing is kept)."""
        if self.shard is None:
            return sum(1 for _ in self._raw_rows())
        return sum(1 for raw in self._raw_rows() if self.shard.holds(self._key(raw)[1]))

    def _key(self, raw: _RawRow) -> tuple[dict[str, str], str]:
        """The row's fields, and its key (its ``reference``, else a hash of its cardholder and
        card; a row that could not be read at all is keyed by its line)."""
        fields = {
            field: raw.values[column]
            for field, column in self.by_field.items()
            if column in raw.values
        }
        return fields, record_key(fields) if raw.values else f"line-{raw.line}"

    def rows(self) -> Iterator[CheckedRow]:
        """Every row, checked: a record when it is valid, its errors by column when it is not.

        A row whose key (its ``reference``, or a hash of its cardholder and card) was seen
        earlier in the file is an error: enrolling it would make a second pass for the same
        cardholder, or silently skip it.
        """
        seen_keys = SeenKeys()
        for raw in self._raw_rows():
            fields, key = self._key(raw)
            if self.shard is not None and not self.shard.holds(key):
                continue  # a duplicate hashes to the same shard: that one reports it
            errors = dict(raw.errors)
            record: EnrollRecord | None = None
            if not errors:
                try:
                    record = EnrollRecord.from_row(fields)
                except ValidationError as error:
                    errors = {self.by_field.get(f, f): reason for f, reason in error.errors.items()}
            seen = seen_keys.first_seen(key, raw.line)
            if record is not None and seen != raw.line:
                record = None
                errors = {self.by_field["reference"]: f"duplicates the record on line {seen}"}
            yield CheckedRow(
                line=raw.line, key=key, record=record, errors=errors, values=raw.values
            )

    def _raw_rows(self) -> Iterator[_RawRow]:
        return self._csv_rows() if self.format == "csv" else self._jsonl_rows()

    def _csv_rows(self) -> Iterator[_RawRow]:
        width = len(self.columns)
        with self.path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
            stream.readline()
            for line, text in enumerate(map(Secret, stream), start=2):
                try:
                    cells = _csv_cells(text)
                except csv.Error as error:
                    yield _RawRow(line=line, values={}, errors={"row": _csv_problem(error)})
                    continue
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != width:
                    # Cells out of line with the header: no column can be trusted to hold
                    # what its name says (the CVV may sit under "first_name"), so none is kept.
                    reason = f"has {len(cells)} cells; the header has {width}"
                    yield _RawRow(line=line, values={}, errors={"row": reason})
                    continue
                if self.errors_file:
                    cells = [restore(cell) for cell in cells]
                values = dict(zip(self.columns, cells, strict=True))
                yield _RawRow(line=line, values=values, errors=self._check_values(values))

    def _jsonl_rows(self) -> Iterator[_RawRow]:
        with self.path.open("rb") as stream:
            for line, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                try:
                    text = Secret(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
                except UnicodeDecodeError:
                    yield _RawRow(line=line, values={}, errors={"row": "is not UTF-8 text"})
                    continue
                del raw  # the line's bytes: only ``text``, a secret, stays
                try:
                    data = json.loads(text, object_hook=_secret_strings)
                except (ValueError, RecursionError):  # also a number too long to read
                    yield _RawRow(line=line, values={}, errors={"row": "is not valid JSON"})
                    continue
                if not isinstance(data, dict):
                    yield _RawRow(line=line, values={}, errors={"row": "is not a JSON object"})
                    continue
                values: dict[str, str] = {}
                errors: dict[str, str] = {}
                for column in self.columns:
                    value = data.get(column)
                    if isinstance(value, str):
                        values[column] = value
                    elif value is not None:
                        errors[column] = "must be a JSON string"
                errors |= self._check_values(values)
                for field in REQUIRED_FIELDS:
                    if self.by_field[field] not in data:
                        errors[self.by_field[field]] = "is missing"
                yield _RawRow(line=line, values=values, errors=errors)

    def _check_values(self, values: Mapping[str, str]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for column, value in values.items():
            if _has_surrogates(value):
                errors[column] = "is not UTF-8 text"
            elif len(value) > MAX_FIELD:
                errors[column] = f"is longer than {MAX_FIELD} characters"
        return errors
