"""The values of a batch enrollment job: records in, outcomes out, and its checkpoint.

Kept apart from the engine so the CLI (and users' own job runners) can build records and read
outcomes without touching the pipeline.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Literal

import attrs

from ._errors import LoyaltyLayerError, ValidationError
from ._models import Card, Holder, Pass, check_reference_and_metadata

__all__ = [
    "RECORD_FIELDS",
    "EnrollCheckpoint",
    "EnrollOutcome",
    "EnrollRecord",
    "PendingEnrollment",
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


def record_key(row: Mapping[str, str]) -> str:
    """A row's key across reruns: its ``reference``, else a hash of its non-secret fields.

    The PAN is left out of the hash on purpose: a hash of a 16-digit number with a known prefix
    can be reversed by brute force, so only its last four digits take part.
    """
    reference = row.get("reference")
    if isinstance(reference, str) and reference.strip():
        return reference.strip()
    names = ("first_name", "last_name", "email", "phone", "country")
    parts = [str(row.get(name) or "") for name in names]
    parts += [str(row.get("card_number") or "")[-4:], str(row.get("card_expiry") or "")]
    return "row_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


@attrs.frozen(kw_only=True)
class EnrollRecord:
    """One cardholder to enroll. ``key`` identifies it across reruns of the same job."""

    key: str
    card: Card
    holder: Holder
    reference: str | None = None
    metadata: Mapping[str, str] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> EnrollRecord:
        """Build a record from a flat row (the CLI's columns); every bad field in one error."""
        errors: dict[str, str] = {}

        def text(name: str) -> str | None:
            value = row.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                errors[name] = "must be text"
                return None
            return value.strip() or None

        card = holder = None
        try:
            card = Card(**{attr: text(column) or "" for attr, column in _CARD_FIELDS.items()})
        except ValidationError as error:
            for field, reason in error.errors.items():
                errors[_CARD_FIELDS.get(field.removeprefix("card."), field)] = reason
        try:
            holder = Holder(
                first_name=text("first_name") or "",
                last_name=text("last_name") or "",
                email=text("email"),
                phone=text("phone"),
                country=(text("country") or "").upper() or None,
            )
        except ValidationError as error:
            errors.update({field.removeprefix("holder."): r for field, r in error.errors.items()})
        if holder is not None and holder.email is None:
            errors["email"] = "is required to create a pass"
        reference = text("reference")
        check_reference_and_metadata(errors, "", reference, None)
        if errors or card is None or holder is None:
            raise ValidationError(errors)
        return cls(key=record_key(row), card=card, holder=holder, reference=reference)


@attrs.frozen(kw_only=True)
class EnrollOutcome:
    """What happened to one record: ``created`` (with the pass), ``failed`` or ``skipped``."""

    index: int
    key: str
    status: Literal["created", "failed", "skipped"]
    pass_: Pass | None = None
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


@attrs.frozen(kw_only=True)
class PendingEnrollment:
    """A record tokenized and about to be created: saved first, so a rerun can replay it.

    A rerun sends exactly the same create (same ``enrol_token``, same ``idempotency_key``), so
    if the first one reached the server the pass it made comes back instead of a second one.
    """

    key: str
    idempotency_key: str
    enrol_token: str = attrs.field(repr=False)
    token_expires_at: dt.datetime


class EnrollCheckpoint(abc.ABC):
    """Where a job remembers progress between runs (the CLI keeps it in ``results.jsonl``)."""

    @abc.abstractmethod
    def is_done(self, key: str) -> bool:
        """The record was created in an earlier run (it will be skipped)."""

    @abc.abstractmethod
    def pending(self, key: str) -> PendingEnrollment | None:
        """A create an earlier run may have sent, to be sent again exactly as it was."""

    @abc.abstractmethod
    async def save_pending(self, pending: PendingEnrollment) -> None:
        """Persist ``pending`` before its create is sent."""


class MemoryCheckpoint(EnrollCheckpoint):
    """A checkpoint that lasts one run: nothing is skipped, nothing is kept."""

    def is_done(self, key: str) -> bool:
        return False

    def pending(self, key: str) -> PendingEnrollment | None:
        return None

    async def save_pending(self, pending: PendingEnrollment) -> None:
        return None


def enrollment_key(job_id: str, plan_id: str, key: str) -> str:
    """The deterministic idempotency key of a record's create within a job."""
    digest = hashlib.sha256(f"{job_id}\x1f{plan_id}\x1f{key}".encode()).hexdigest()
    return f"enr_{digest[:40]}"


def next_enrollment_key(key: str) -> str:
    """The key for a new create after the server provably made no pass under ``key``."""
    base, _, generation = key.partition(".")
    return f"{base}.{int(generation or 1) + 1}"
