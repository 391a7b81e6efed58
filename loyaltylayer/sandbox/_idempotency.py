"""Idempotency-Key bookkeeping: the first answer per (client_id, key), replayed on retries.

Only a digest of the canonical request body is kept, never the body itself: tokenize bodies
carry a JWE of card data.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from ._errors import ApiError

__all__ = ["IdempotencyStore", "Stored", "digest", "reused_error"]

_SWEEP_EVERY = 1024


def digest(endpoint: str, body: object) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()


def reused_error() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_reused",
        "This Idempotency-Key was already used with a different request.",
    )


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "request_in_progress",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    )


@attrs.frozen(kw_only=True)
class Stored:
    """A finished answer: its status and JSON body."""

    status: int
    body: Any


@attrs.define(kw_only=True)
class _Record:
    digest: str
    created_at: float
    answer: Stored | None = None


class IdempotencyStore:
    """Records kept for ``ttl`` seconds after they are made; in-progress ones until finished."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._records: dict[tuple[str, str], _Record] = {}
        self._begun = 0

    def begin(self, client_id: str, key: str, request_digest: str, now: float) -> Stored | None:
        """The stored answer to replay, or ``None`` after reserving the key for this request.

        Raises the API's 409 when the key belongs to another request or is still in flight.
        """
        self._begun += 1
        if self._begun % _SWEEP_EVERY == 0:
            self._sweep(now)
        record = self._records.get((client_id, key))
        if record is not None and record.answer is not None and self._expired(record, now):
            record = None
        if record is None:
            self._records[(client_id, key)] = _Record(digest=request_digest, created_at=now)
            return None
        if record.digest != request_digest:
            raise reused_error()
        if record.answer is None:
            raise _in_progress()
        return record.answer

    def finish(self, client_id: str, key: str, answer: Stored, now: float) -> None:
        record = self._records.get((client_id, key))
        if record is not None:
            record.answer = answer
            record.created_at = now

    def abandon(self, client_id: str, key: str) -> None:
        """Forget a reservation whose answer must not be replayed (5xx, 400, dropped)."""
        record = self._records.get((client_id, key))
        if record is not None and record.answer is None:
            del self._records[(client_id, key)]

    def clear(self) -> None:
        self._records.clear()

    def _expired(self, record: _Record, now: float) -> bool:
        return now - record.created_at >= self._ttl

    def _sweep(self, now: float) -> None:
        stale = [
            k for k, r in self._records.items() if r.answer is not None and self._expired(r, now)
        ]
        for k in stale:
            del self._records[k]
