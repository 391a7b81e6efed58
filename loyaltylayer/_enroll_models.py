"""The values of a batch enrollment job: records in, outcomes out, and what a checkpoint keeps.

Kept apart from the engine so the CLI (and users' own job runners) can build records, read
outcomes and write checkpoints without touching the pipeline.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from . import _rules
from ._cardmath import looks_like_card_number
from ._errors import LoyaltyLayerError, ValidationError
from ._models import (
    Card,
    Holder,
    Pass,
    check_id,
    check_reference_and_metadata,
    raise_if_invalid,
)
from ._secrets import as_secret

__all__ = [
    "RECORD_FIELDS",
    "EnrollCheckpoint",
    "EnrollOutcome",
    "EnrollProgress",
    "EnrollRecord",
    "MemoryCheckpoint",
    "digest_id",
    "enrollment_key",
    "next_enrollment_key",
    "record_key",
]

RECORD_FIELDS = (
    "card_number",
    "card_expiry",
    "name_on_card",
    "cvv",
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "reference",
)
"""The columns of an input row, in the order the CLI documents them."""

_CARD_FIELDS = {
    "number": "card_number",
    "expiry": "card_expiry",
    "name": "name_on_card",
    "cvv": "cvv",
}
_ENROLLMENT_KEY = re.compile(r"enr_[0-9a-f]{40}(\.[0-9]{1,9})?")
"""What :func:`enrollment_key` and :func:`next_enrollment_key` make."""
_CARD_AS_REFERENCE = "looks like a card number: give the record another reference"


def record_key(row: Mapping[str, object]) -> str:
    """A row's key across reruns: its ``reference``, else a hash of its non-secret fields.

    The PAN is left out of the hash on purpose: a hash of a 16-digit number with a known prefix
    can be reversed by brute force, so only its last four digits take part. A reference that is
    a card number is no key either (the row is refused for it): keys are written in clear.
    """
    reference = row.get("reference")
    reference = reference.strip() if isinstance(reference, str) else ""
    if reference and not looks_like_card_number(reference):
        return reference
    names = ("first_name", "last_name", "email", "phone", "country")
    parts = [str(row.get(name) or "") for name in names]
    parts += [str(row.get("card_number") or "")[-4:], str(row.get("card_expiry") or "")]
    return digest_id("row_", *parts)


def digest_id(prefix: str, *parts: str) -> str:
    """A stable id made from ``parts``: the same parts give the same id on every run."""
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


@attrs.frozen(kw_only=True)
class EnrollRecord:
    """One cardholder to enroll. ``key`` identifies it across reruns of the same job."""

    key: str
    card: Card
    holder: Holder
    reference: str | None = None
    metadata: Mapping[str, str] | None = None

    def __attrs_post_init__(self) -> None:
        errors: dict[str, str] = {}
        check_id(errors, "key", self.key)
        if "key" not in errors and looks_like_card_number(self.key):
            errors["key"] = "looks like a card number: keys are written in clear"
        if isinstance(self.reference, str) and looks_like_card_number(self.reference):
            errors["reference"] = _CARD_AS_REFERENCE
        raise_if_invalid(errors)

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> EnrollRecord:
        """Build a record from a flat row (the CLI's columns); every bad field in one error."""
        if not isinstance(row, Mapping):
            raise ValidationError({"record": "must be an EnrollRecord or a mapping of columns"})
        errors: dict[str, str] = {}

        def text(name: str) -> str | None:
            value = row.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                errors[name] = "must be text"
                return None
            if _rules.has_control_characters(value):
                errors[name] = "must not contain control characters"
                return None
            return value.strip() or None

        card = holder = None
        try:
            card = Card(**{attr: text(column) or "" for attr, column in _CARD_FIELDS.items()})
        except ValidationError as error:
            for field, reason in error.errors.items():
                errors.setdefault(_CARD_FIELDS.get(field.removeprefix("card."), field), reason)
        try:
            holder = Holder(
                first_name=text("first_name") or "",
                last_name=text("last_name") or "",
                email=text("email"),
                phone=text("phone"),
                country=(text("country") or "").upper() or None,
            )
        except ValidationError as error:
            for field, reason in error.errors.items():
                errors.setdefault(field.removeprefix("holder."), reason)
        if holder is not None and holder.email is None:
            errors.setdefault("email", "is required to create a pass")
        reference = text("reference")
        check_reference_and_metadata(errors, "", reference, None)
        if reference is not None and looks_like_card_number(reference):
            errors.setdefault("reference", _CARD_AS_REFERENCE)
        if errors or card is None or holder is None:
            raise ValidationError(errors)
        return cls(key=record_key(row), card=card, holder=holder, reference=reference)


Status = Literal["pending", "created", "created_earlier", "failed", "skipped"]


@attrs.frozen(kw_only=True)
class EnrollOutcome:
    """What happened to one record.

    ``status`` is ``created`` (with the pass), ``created_earlier`` (the server says an earlier
    run of this job made the record's pass: a rerun whose checkpoint was lost), ``failed`` (with
    the error) or ``skipped`` (the checkpoint says an earlier run finished it). Only a
    checkpoint sees ``pending``: the record's create is about to be sent.
    """

    index: int
    key: str
    status: Status
    pass_: Pass | None = None
    pass_id: str | None = None
    """The record's pass: the one ``created``, or for ``skipped`` the one the checkpoint kept
    (``None`` when it kept none: the pass was ``created_earlier``, or recorded without it)."""
    error: LoyaltyLayerError | None = attrs.field(default=None, eq=False)
    idempotency_key: str | None = None
    card: str | None = None
    """The masked card (``**** 1111``), for reports."""
    attempts: int = 0
    replayed: bool = False

    @property
    def retryable(self) -> bool:
        """A failure a rerun of the job may fix (a fault, a timeout), not a bad record."""
        return self.error is not None and self.error.retryable


Step = Literal["done", "send", "tokenize"]
_STEPS: tuple[Step, ...] = ("done", "send", "tokenize")


def _check_progress(progress: EnrollProgress) -> dict[str, str]:
    errors: dict[str, str] = {}
    check_id(errors, "key", progress.key)
    if progress.step not in _STEPS:
        errors["step"] = "must be done, send or tokenize"
        return errors
    if progress.pass_id is not None:
        if progress.step != "done":
            errors["pass_id"] = "only a record that is done has a pass"
        else:
            check_id(errors, "pass_id", progress.pass_id)
    if progress.step == "done":
        return errors
    key = progress.idempotency_key
    if not isinstance(key, str) or _ENROLLMENT_KEY.fullmatch(key) is None:
        errors["idempotency_key"] = f"must be a key of this engine (enr_...), to {progress.step}"
    if progress.step == "tokenize":
        return errors
    if progress.enrol_token is None:
        errors["enrol_token"] = "is required to send"
    else:
        check_id(errors, "enrol_token", progress.enrol_token)
    expires = progress.token_expires_at
    if not isinstance(expires, dt.datetime):
        errors["token_expires_at"] = "must be a datetime, to send"
    elif expires.utcoffset() is None:
        errors["token_expires_at"] = "must have a UTC offset"
    return errors


@attrs.frozen(kw_only=True)
class EnrollProgress:
    """Where one record of a job stands: all a checkpoint keeps, all a rerun needs.

    The engine decides it from what happened; a checkpoint stores the last one recorded per
    key and hands it back. ``step`` is what a rerun does with the record:

    * ``done``: nothing; its pass exists. ``pass_id`` names it, when known: a consumer that
      stopped before it was handed the outcome learns it from a rerun (``skipped``).
    * ``send``: send its create under ``idempotency_key`` with ``enrol_token``. If the create
      was sent before and reached the server, the server replays the pass it made then.
    * ``tokenize``: tokenize the card afresh, then create under ``idempotency_key``, a key the
      server provably made no pass under.

    Checked when made, so a checkpoint that hands back something unusable (a naive
    ``token_expires_at``, an empty token) fails with the field named, before anything is sent.
    """

    key: str
    step: Step
    idempotency_key: str | None = None
    enrol_token: str | None = attrs.field(default=None, repr=False, converter=as_secret)
    token_expires_at: dt.datetime | None = None
    pass_id: str | None = None

    def __attrs_post_init__(self) -> None:
        errors = _check_progress(self)
        raise_if_invalid(errors)

    def to_json(self) -> dict[str, str]:
        """The progress as JSON-ready text, without the key (stored beside it)."""
        data: dict[str, str] = {"step": self.step}
        if self.idempotency_key is not None:
            data["idempotency_key"] = self.idempotency_key
        if self.enrol_token is not None:
            data["enrol_token"] = self.enrol_token
        if self.token_expires_at is not None:
            data["token_expires_at"] = self.token_expires_at.isoformat()
        if self.pass_id is not None:
            data["pass_id"] = self.pass_id
        return data

    @classmethod
    def from_json(cls, key: str, data: object) -> EnrollProgress:
        """Read back what :meth:`to_json` made; a bad value is a :class:`ValidationError`."""
        if not isinstance(data, Mapping):
            raise ValidationError({"progress": "must be a JSON object"})
        errors: dict[str, str] = {}
        fields: dict[str, Any] = {}
        for name in ("step", "idempotency_key", "enrol_token", "token_expires_at", "pass_id"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                errors[name] = "must be a string"
            else:
                fields[name] = value
        expires = fields.get("token_expires_at")
        if expires is not None:
            try:
                fields["token_expires_at"] = dt.datetime.fromisoformat(expires)
            except ValueError:
                errors["token_expires_at"] = "must be an ISO 8601 time"
        raise_if_invalid(errors)
        return cls(key=key, **fields)


class EnrollCheckpoint(abc.ABC):
    """Where an enrollment job keeps each record's progress between runs.

    The engine makes every decision (see :class:`EnrollProgress`); a checkpoint only stores
    the last progress recorded per key and hands it back. Its methods are coroutines, also for
    the synchronous client (they run on the SDK's event loop, whose thread is not the caller's),
    so a database client that awaits fits. An exception from either stops the job with an
    :class:`~loyaltylayer.EnrollmentError`.
    """

    @abc.abstractmethod
    async def recall(self, key: str) -> EnrollProgress | None:
        """The progress last recorded for ``key`` by an earlier run, or ``None``.

        Asked once per record and run, before anything is sent for the record.
        """

    @abc.abstractmethod
    async def record(self, outcome: EnrollOutcome, progress: EnrollProgress) -> None:
        """Keep ``progress`` as where ``outcome.key`` stands; it must last once this returns.

        Called for each step of a record: ``pending`` before its create is sent, then its
        outcome before it is handed out (a ``done`` progress names the pass it made). Never for
        ``skipped`` records or records refused before any request (nothing about them changed).
        """


class MemoryCheckpoint(EnrollCheckpoint):
    """Progress kept in memory for as long as this object lives.

    Reruns in the same process resume from it; nothing survives the process. Memory grows with
    the job: a pass id per finished record, a small object per unfinished one.
    """

    def __init__(self) -> None:
        self._done: dict[str, str | None] = {}
        """Finished keys, and the id of the pass each made (when known)."""
        self._unfinished: dict[str, EnrollProgress] = {}

    def keep(self, progress: EnrollProgress) -> None:
        """Keep ``progress`` as where its record stands (what :meth:`record` does)."""
        if progress.step == "done":
            self._done[progress.key] = progress.pass_id
            self._unfinished.pop(progress.key, None)
        else:
            self._unfinished[progress.key] = progress

    def progress_of(self, key: str) -> EnrollProgress | None:
        """What :meth:`recall` answers, without awaiting."""
        if key in self._done:
            return EnrollProgress(key=key, step="done", pass_id=self._done[key])
        return self._unfinished.get(key)

    @property
    def done_count(self) -> int:
        return len(self._done)

    async def recall(self, key: str) -> EnrollProgress | None:
        return self.progress_of(key)

    async def record(self, outcome: EnrollOutcome, progress: EnrollProgress) -> None:
        self.keep(progress)


def enrollment_key(job_id: str, plan_id: str, key: str) -> str:
    """The deterministic idempotency key of a record's create within a job."""
    digest = hashlib.sha256(f"{job_id}\x1f{plan_id}\x1f{key}".encode()).hexdigest()
    return f"enr_{digest[:40]}"


def next_enrollment_key(key: str) -> str:
    """The key for a new create after the server provably made no pass under ``key``."""
    base, _, generation = key.partition(".")
    return f"{base}.{int(generation or 1) + 1}"
