"""The job's two output files: ``results.jsonl`` (also its checkpoint) and ``errors.csv``.

``results.jsonl`` is append-only and flushed after every row, so a job killed at any moment
(even with SIGKILL) leaves a file a rerun can resume from. Its first row names the job; then
come ``pending`` rows (a record was tokenized and its create is about to be sent: the engine
saves one before sending) and one outcome row per record (``created`` or ``failed``).

On a rerun, the last row of each key decides:

* ``created``: done, skipped;
* ``pending``, or a retryable ``failed`` after one: the create is sent again exactly as before
  (same enrol token, same idempotency key), so if the first one reached the server the pass it
  made comes back instead of a second one;
* a ``failed`` create the server refused with a 400: it made no pass under that key, so the
  record is tried again under the next key (the input row may have been fixed since);
* any other ``failed`` row (a bad row, a card the server refused): tried again from the start.
  Bad rows cost no request, and fail again the same way until the input is fixed.

Only a little state per key is kept in memory (a set of finished keys, and the pending create
of unfinished ones), never the rows. No row ever holds a card number, a CVV or a JWE: the card
appears masked (``**** 1111``), and the enrol token is the server's opaque, single-use handle.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from .._cardmath import luhn_valid
from .._enroll_models import (
    EnrollCheckpoint,
    EnrollOutcome,
    PendingEnrollment,
    next_enrollment_key,
)
from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    LoyaltyLayerError,
    UnexpectedResponseError,
    ValidationError,
)
from .._json import encode_compact

__all__ = [
    "ErrorsFile",
    "JobInfo",
    "ResultsError",
    "ResultsFile",
    "describe_error",
    "describe_errors",
    "mask_card",
]

_FORMAT = "loyaltylayer-results/1"
_PAN_LIKE = re.compile(r"(?<![+\d])\d(?:[ -]?\d){11,18}(?!\d)")
"""12 to 19 digits, maybe grouped, not after a ``+`` (an E.164 phone number)."""


class ResultsError(Exception):
    """The results file cannot be resumed from (another job's file, or not a results file)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@attrs.frozen(kw_only=True)
class JobInfo:
    """The first row of a results file: which job the rest of it belongs to."""

    job_id: str
    plan_id: str
    input: str
    environment: str
    started_at: str

    @classmethod
    def new(cls, *, plan_id: str, input: str, environment: str, restart: bool) -> JobInfo:
        """The job id is derived from the plan and the input path, so it stays the same even if
        the results file is lost; ``restart`` makes a fresh one."""
        seed = f"{plan_id}\x1f{input}" + (f"\x1f{uuid.uuid4().hex}" if restart else "")
        job_id = "job_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
        return cls(
            job_id=job_id, plan_id=plan_id, input=input, environment=environment, started_at=_now()
        )


INVALID_RECORD = "invalid_record"
"""The error code of a row that failed the local checks: no request was sent for it."""


def _error_json(error: LoyaltyLayerError) -> dict[str, Any]:
    data: dict[str, Any] = {"retryable": error.retryable}
    if isinstance(error, APIStatusError):
        data |= {"code": error.error, "message": error.description, "status": error.status}
        if error.fields:
            data["fields"] = error.fields
    elif isinstance(error, ValidationError):
        data |= {"code": INVALID_RECORD, "message": str(error), "fields": error.errors}
    else:
        code = (
            "timeout"
            if isinstance(error, APITimeoutError)
            else "connection_error"
            if isinstance(error, APIConnectionError)
            else "unexpected_response"
            if isinstance(error, UnexpectedResponseError)
            else type(error).__name__
        )
        data |= {"code": code, "message": str(error)}
    correlation_id = getattr(error, "correlation_id", None)
    if correlation_id is not None:
        data["correlation_id"] = correlation_id
    return data


def describe_error(error: LoyaltyLayerError) -> str:
    """One line for ``errors.csv`` and the console: the error code and its message."""
    data = _error_json(error)
    return f"{data['code']}: {data['message']}"


def describe_errors(errors: Mapping[str, str]) -> str:
    """``{"email": "is not valid"}`` -> ``email: is not valid`` (rules only, never values)."""
    return "; ".join(f"{column}: {reason}" for column, reason in errors.items())


class ResultsFile(EnrollCheckpoint):
    """``results.jsonl``: the job's record of every outcome, and the checkpoint it resumes from."""

    def __init__(
        self,
        path: Path,
        job: JobInfo,
        *,
        done: set[str],
        pending: dict[str, PendingEnrollment],
        resumed: bool,
    ) -> None:
        self.path = path
        self.job = job
        self.resumed = resumed
        self._done = done
        self._pending = pending
        self._file: IO[str] | None = None

    @classmethod
    def load(
        cls, path: Path, *, plan_id: str, input: str, environment: str, restart: bool
    ) -> ResultsFile:
        """Read an earlier run's file (unless ``restart``); writes nothing."""
        fresh = JobInfo.new(plan_id=plan_id, input=input, environment=environment, restart=restart)
        if restart or not path.exists() or path.stat().st_size == 0:
            return cls(path, fresh, done=set(), pending={}, resumed=False)
        done: set[str] = set()
        pending: dict[str, PendingEnrollment] = {}
        job: JobInfo | None = None
        with path.open(encoding="utf-8", errors="replace") as stream:
            for text in stream:
                try:
                    row = json.loads(text)
                except json.JSONDecodeError:
                    continue  # a row torn by a kill mid-write; its record is redone
                if job is None:
                    job = cls._job_row(path, row)
                    cls._check_same_job(path, job, fresh)
                    continue
                cls._apply(row, done, pending)
        if job is None:
            return cls(path, fresh, done=set(), pending={}, resumed=False)
        return cls(path, job, done=done, pending=pending, resumed=True)

    @staticmethod
    def _job_row(path: Path, row: object) -> JobInfo:
        if not isinstance(row, dict) or row.get("format") != _FORMAT:
            raise ResultsError(f"{path} is not a loyaltylayer results file")
        try:
            return JobInfo(**{field.name: row[field.name] for field in attrs.fields(JobInfo)})
        except (KeyError, TypeError):
            raise ResultsError(f"{path} has a damaged first row") from None

    @staticmethod
    def _check_same_job(path: Path, job: JobInfo, current: JobInfo) -> None:
        for what in ("plan_id", "input", "environment"):
            if getattr(job, what) != getattr(current, what):
                raise ResultsError(
                    f"{path} belongs to another job ({what} {getattr(job, what)!r}, "
                    f"not {getattr(current, what)!r}): give another --out, or --restart"
                )

    @staticmethod
    def _apply(row: Any, done: set[str], pending: dict[str, PendingEnrollment]) -> None:
        if not isinstance(row, dict) or not isinstance(key := row.get("key"), str):
            return
        error = row.get("error") or {}
        if key in done or error.get("code") == INVALID_RECORD:
            # A created record stays created, whatever a later row says (a duplicate row of the
            # input fails under the same key); and a row that failed the local checks sent
            # nothing, so it says nothing about what the server has.
            return
        status = row.get("status")
        if status == "created":
            done.add(key)
            pending.pop(key, None)
        elif status == "pending":
            pending[key] = PendingEnrollment(
                key=key,
                idempotency_key=row["idempotency_key"],
                enrol_token=row["enrol_token"],
                token_expires_at=dt.datetime.fromisoformat(row["token_expires_at"]),
            )
        elif status == "failed":
            sent = pending.get(key)
            if (
                sent is not None
                and not error.get("retryable")
                and error.get("status") == 400
                and sent.idempotency_key == row.get("idempotency_key")
            ):
                pending[key] = attrs.evolve(
                    sent, idempotency_key=next_enrollment_key(sent.idempotency_key)
                )

    @property
    def done_count(self) -> int:
        return len(self._done)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def open(self) -> None:
        """Start appending (a fresh file gets its job row first)."""
        if not self.resumed:
            self._file = self.path.open("w", encoding="utf-8")
            self._write(
                {"format": _FORMAT} | attrs.asdict(self.job),
            )
            return
        with self.path.open("rb") as stream:
            stream.seek(-1, 2)
            torn = stream.read(1) != b"\n"
        self._file = self.path.open("a", encoding="utf-8")
        if torn:
            self._file.write("\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, row: Mapping[str, Any]) -> None:
        assert self._file is not None, "open() the results file first"
        self._file.write(encode_compact(row) + "\n")
        self._file.flush()

    def is_done(self, key: str) -> bool:
        return key in self._done

    def pending(self, key: str) -> PendingEnrollment | None:
        return self._pending.get(key)

    async def save_pending(self, pending: PendingEnrollment) -> None:
        self._write(
            {
                "key": pending.key,
                "status": "pending",
                "idempotency_key": pending.idempotency_key,
                "enrol_token": pending.enrol_token,
                "token_expires_at": pending.token_expires_at.isoformat(),
                "at": _now(),
            }
        )

    def write_outcome(self, outcome: EnrollOutcome, *, line: int) -> None:
        """One row for a created or failed record (skipped ones already have theirs)."""
        created = outcome.pass_
        self._write(
            {
                "key": outcome.key,
                "line": line,
                "status": outcome.status,
                "pass_id": created.pass_id if created is not None else None,
                "pass_type": created.type if created is not None else None,
                "card": outcome.card,
                "error": _error_json(outcome.error) if outcome.error is not None else None,
                "attempts": outcome.attempts,
                "idempotency_key": outcome.idempotency_key,
                "replayed": outcome.replayed,
                "at": _now(),
            }
        )

    def write_invalid(
        self, *, key: str, line: int, card: str | None, errors: Mapping[str, str]
    ) -> None:
        """The row for an input row that failed the local checks (no request was sent)."""
        self._write(
            {
                "key": key,
                "line": line,
                "status": "failed",
                "pass_id": None,
                "pass_type": None,
                "card": card,
                "error": {
                    "retryable": False,
                    "code": INVALID_RECORD,
                    "message": describe_errors(errors),
                    "fields": dict(errors),
                },
                "attempts": 0,
                "idempotency_key": None,
                "replayed": False,
                "at": _now(),
            }
        )


def mask_card(value: str) -> str:
    """``4111 1111 1111 1111`` -> ``**** 1111``: the most of a card number any output shows."""
    digits = "".join(char for char in value if char.isdigit())
    return f"**** {digits[-4:]}" if len(digits) >= 4 else "****"


def _mask_if_pan(match: re.Match[str]) -> str:
    digits = "".join(char for char in match.group() if char.isdigit())
    return mask_card(digits) if luhn_valid(digits) else match.group()


class ErrorsFile:
    """``errors.csv``: the failed input rows, ready to fix and feed back in.

    Same columns as the input (after ``line`` and ``error``), with the card number masked, the
    CVV left empty, and anything else that looks like a card number masked too (a row with a
    missing comma puts the card number in another column).
    """

    def __init__(self, path: Path, columns: Sequence[str], *, card: str, cvv: str) -> None:
        self.path = path
        self._columns = tuple(columns)
        self._card = card
        self._cvv = cvv
        self._file = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(("line", "error", *self._columns))
        self._file.flush()
        self.rows = 0

    def mask(self, values: Mapping[str, str]) -> dict[str, str]:
        """The row as it may be written: safe to keep while its record is in flight."""
        masked: dict[str, str] = {}
        for column in self._columns:
            value = values.get(column, "").encode("utf-8", "replace").decode("utf-8")
            if column == self._cvv:
                value = ""
            elif column == self._card:
                value = mask_card(value) if value else ""
            else:
                value = _PAN_LIKE.sub(_mask_if_pan, value)
            masked[column] = value
        return masked

    def write(self, *, line: int, reason: str, masked: Mapping[str, str]) -> None:
        self._writer.writerow((line, reason, *(masked.get(c, "") for c in self._columns)))
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()
