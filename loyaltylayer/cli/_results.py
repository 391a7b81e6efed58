"""``results.jsonl``: the job's record of every outcome, and the checkpoint it resumes from.

The file is append-only (never truncated) and flushed after every row, so a job killed at any
moment (even with SIGKILL) leaves a file a rerun can resume from. Its first row names the job:
its id, which a rerun goes by (a moved or renamed input resumes, with a warning), its plan and
the API it talks to. Then come, per record, a ``pending`` row before its create is sent and an
outcome row (``created``, ``created_earlier`` or ``failed``), each carrying under ``resume``
where the engine says the record stands (:class:`~loyaltylayer.EnrollProgress`); the last of
them per key is what a rerun does with the record. Each later run starts with a ``run`` row.

Every row is checked when the file is read: a malformed one is an error naming its line,
before anything is sent. Only a row torn by a crash mid-write is passed over: the last line of
the file, or a line just before a ``run`` row.

Only a little state per key is kept in memory (a set of finished keys, and the progress of
unfinished ones), never the rows. No row ever holds a card number, a CVV or a JWE: the card
appears masked (``**** 1111``), and the enrol token is the server's opaque, single-use handle.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import attrs

from .._enroll_models import (
    EnrollCheckpoint,
    EnrollOutcome,
    EnrollProgress,
    MemoryCheckpoint,
    digest_id,
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
from ._files import append_private, free_name, set_aside, write_error

__all__ = [
    "INVALID_RECORD",
    "JobInfo",
    "ResultsError",
    "ResultsFile",
    "StartOver",
    "describe_error",
    "describe_errors",
    "record_rows",
]

_FORMAT = "loyaltylayer-results/2"
_STATUSES = frozenset({"pending", "created", "created_earlier", "failed"})

INVALID_RECORD = "invalid_record"
"""The error code of a row that failed the local checks: no request was sent for it."""


class ResultsError(Exception):
    """The results file cannot be resumed from (another job's file, damaged, not ours)."""


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
    def from_row(cls, path: Path, row: object) -> JobInfo:
        if not isinstance(row, dict) or row.get("format") != _FORMAT:
            raise ResultsError(
                f"{path} is not a results file of this loyaltylayer (line 1 names no job)"
            )
        values: dict[str, str] = {}
        for field in attrs.fields(cls):
            value = row.get(field.name)
            if not isinstance(value, str) or not value:
                raise ResultsError(f"{path} line 1: {field.name} must be text")
            values[field.name] = value
        return cls(**values)


@attrs.frozen(kw_only=True)
class StartOver:
    """An earlier job's results file, kept under another name while a new job starts."""

    earlier: JobInfo
    reason: Literal["restart", "sandbox"]
    """``restart`` (asked for: its created records get a second pass) or ``sandbox`` (it was
    written against an embedded sandbox, whose passes ended with it)."""
    created: int
    """The records the earlier job created."""
    kept_as: Path


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


def _is_run_row(row: object) -> bool:
    return isinstance(row, dict) and "run_started_at" in row


def _progress_of_row(row: object) -> EnrollProgress | None:
    """Where a record row leaves its record; ``ValueError`` names what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("is not a JSON object")
    key = row.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("has no key")
    if row.get("status") not in _STATUSES:
        raise ValueError(f"status must be one of {', '.join(sorted(_STATUSES))}")
    if not isinstance(row.get("error"), dict | None):
        raise ValueError("error must be an object or null")
    resume = row.get("resume")
    if resume is None:
        return None
    try:
        return EnrollProgress.from_json(key, resume)
    except ValidationError as error:
        raise ValueError(
            "; ".join(f"resume.{field}: {reason}" for field, reason in error.errors.items())
        ) from None


def record_rows(
    path: Path, stream: IO[str]
) -> Iterator[tuple[dict[str, Any], EnrollProgress | None]]:
    """The record rows of a results file after its first row, each checked (a malformed one is
    a :class:`ResultsError` naming its line), with where each leaves its record.

    A line that is not JSON at all is where a crash cut a write short, if it is the last line
    or the next run's first row follows it; anywhere else it is damage.
    """
    unreadable: int | None = None
    for number, text in enumerate(stream, start=2):
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            if unreadable is not None:
                break
            if not text.endswith("\n"):
                return  # the last line, torn by a crash mid-write
            unreadable = number
            continue
        except (ValueError, RecursionError):
            raise ResultsError(f"{path} line {number}: is not valid JSON") from None
        if _is_run_row(row):
            unreadable = None
            continue
        if unreadable is not None:
            break
        try:
            progress = _progress_of_row(row)
        except ValueError as error:
            raise ResultsError(f"{path} line {number}: {error}") from None
        yield row, progress
    if unreadable is not None:
        raise ResultsError(f"{path} line {unreadable}: is not valid JSON")


class ResultsFile(EnrollCheckpoint):
    """The results file of one run: what earlier runs of its job recorded, and this run's rows.

    :meth:`load` reads and decides (resume, start over, or refuse) and writes nothing, so a dry
    run can use it; :meth:`open` acts on the decision.
    """

    def __init__(
        self,
        path: Path,
        job: JobInfo,
        *,
        earlier: MemoryCheckpoint,
        resumed: bool,
        input: str,
        start_over: StartOver | None = None,
        moved_from: str | None = None,
    ) -> None:
        self.path = path
        self._input = input
        self.job = job
        self.resumed = resumed
        self.start_over = start_over
        self.moved_from = moved_from
        """The input the job started with, when this run reads another one."""
        self._earlier = earlier
        self._file: IO[str] | None = None
        self._line_of: Callable[[int], int] = lambda index: index
        self._failed: OSError | None = None

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        plan_id: str,
        input: str,
        environment: str,
        job_id: str | None,
        restart: bool,
        forgets: Callable[[str], bool],
    ) -> ResultsFile:
        """Read an earlier run's file, if any, and decide what this run does with it.

        ``forgets(environment)`` is true for an API whose passes do not outlive the command
        (the embedded sandbox): a file written against one is kept aside, never resumed.
        """

        def new_job(job: str) -> JobInfo:
            return JobInfo(
                job_id=job,
                plan_id=plan_id,
                input=input,
                environment=environment,
                started_at=_now(),
            )

        if not path.exists() or path.stat().st_size == 0:
            default_id = job_id or digest_id("job_", plan_id, environment, str(path.resolve()))
            return cls(
                path, new_job(default_id), earlier=MemoryCheckpoint(), resumed=False, input=input
            )
        earlier = MemoryCheckpoint()
        fresh_id = job_id or "job_" + uuid.uuid4().hex[:24]
        with path.open(encoding="utf-8", errors="replace", newline="") as stream:
            job = JobInfo.from_row(path, cls.first_row(path, stream.readline()))
            if forgets(job.environment):
                start_over = StartOver(
                    earlier=job, reason="sandbox", created=0, kept_as=free_name(path, job.job_id)
                )
                return cls(
                    path,
                    new_job(fresh_id),
                    earlier=earlier,
                    resumed=False,
                    input=input,
                    start_over=start_over,
                )
            cls._check_same_job(path, job, plan_id, environment, job_id, restart)
            cls._read_rows(path, stream, earlier)
        if restart:
            start_over = StartOver(
                earlier=job,
                reason="restart",
                created=earlier.done_count,
                kept_as=free_name(path, job.job_id),
            )
            return cls(
                path,
                new_job(fresh_id),
                earlier=MemoryCheckpoint(),
                resumed=False,
                input=input,
                start_over=start_over,
            )
        moved_from = job.input if job.input != input else None
        return cls(path, job, earlier=earlier, resumed=True, input=input, moved_from=moved_from)

    @staticmethod
    def first_row(path: Path, text: str) -> object:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise ResultsError(f"{path} is not a loyaltylayer results file") from None

    @staticmethod
    def _check_same_job(
        path: Path,
        job: JobInfo,
        plan_id: str,
        environment: str,
        job_id: str | None,
        restart: bool,
    ) -> None:
        if restart:
            if job_id == job.job_id:
                raise ResultsError(
                    f"--restart starts a new job: give a --job-id other than {job.job_id} (or none)"
                )
            return
        if job_id is not None and job_id != job.job_id:
            raise ResultsError(
                f"{path} holds job {job.job_id}, not {job_id}: give another --out for that job, "
                "or --restart to keep this file aside and start over (making new passes)"
            )
        for what, mine in (("plan_id", plan_id), ("environment", environment)):
            theirs = getattr(job, what)
            if theirs != mine:
                raise ResultsError(
                    f"{path} belongs to another job ({what} {theirs!r}, not {mine!r}): give "
                    "another --out, or --restart to keep it aside and start over"
                )

    @staticmethod
    def _read_rows(path: Path, stream: IO[str], earlier: MemoryCheckpoint) -> None:
        for _row, progress in record_rows(path, stream):
            if progress is not None:
                earlier.keep(progress)

    def open(self, line_of: Callable[[int], int]) -> None:
        """Start appending: set an earlier job's file aside, or mark where this run starts.

        ``line_of(index)`` is the input line of the engine's record ``index``.
        """
        self._line_of = line_of
        try:
            if self.start_over is not None:
                set_aside(self.path, self.start_over.kept_as)
            if not self.resumed:
                self._file = append_private(self.path)
                self._write({"format": _FORMAT} | attrs.asdict(self.job))
                return
            with self.path.open("rb") as stream:
                stream.seek(-1, 2)
                torn = stream.read(1) != b"\n"
            self._file = append_private(self.path)
            if torn:
                self._file.write("\n")
            self._write({"run_started_at": _now(), "input": self._input})
        except OSError as error:
            raise write_error(self.path, error) from error

    @property
    def done_count(self) -> int:
        return self._earlier.done_count

    def progress_of(self, key: str) -> EnrollProgress | None:
        """Where an earlier run left the record ``key`` (what :meth:`recall` answers)."""
        return self._earlier.progress_of(key)

    async def recall(self, key: str) -> EnrollProgress | None:
        return self._earlier.progress_of(key)

    async def record(self, outcome: EnrollOutcome, progress: EnrollProgress) -> None:
        if outcome.status == "pending":
            row: dict[str, Any] = {"key": outcome.key, "status": "pending"}
        else:
            created = outcome.pass_
            row = {
                "key": outcome.key,
                "line": self._line_of(outcome.index),
                "status": outcome.status,
                "pass_id": created.pass_id if created is not None else None,
                "pass_type": created.type if created is not None else None,
                "card": outcome.card,
                "error": _error_json(outcome.error) if outcome.error is not None else None,
                "attempts": outcome.attempts,
                "replayed": outcome.replayed,
            }
        row |= {
            "idempotency_key": outcome.idempotency_key,
            "resume": progress.to_json(),
            "at": _now(),
        }
        self._write(row)

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
                "replayed": False,
                "idempotency_key": None,
                "resume": None,
                "at": _now(),
            }
        )

    def _write(self, row: Mapping[str, Any]) -> None:
        assert self._file is not None, "open() the results file first"
        if self._failed is not None:
            raise self._failed  # nothing more goes after a row that may be torn
        try:
            self._file.write(encode_compact(row) + "\n")
            self._file.flush()
        except OSError as error:
            self._failed = write_error(self.path, error)
            raise self._failed from error

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError:
            if self._failed is None:
                raise
            # Closing flushed what the failed write left behind, and failed again: said already.
        finally:
            self._file = None
