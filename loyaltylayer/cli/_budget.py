"""How many requests a job needs, and how long they take at the rate-limit budget.

Every request counts against the API's budget, so the plan counts them all: one tokenize per
card (the bottleneck), one batch-create per 100 passes, and the access token and the card
encryption keys (each fetched once, then again for the token's expiry).
"""

from __future__ import annotations

import math

import attrs

from .._ratelimit import RateLimit
from .._rules import MAX_BATCH

__all__ = ["RequestPlan", "budget_eta", "budget_per_second", "format_duration"]

_SETUP_REQUESTS = 3
"""The access token, the credential check's key fetch and the engine's own key fetch."""


@attrs.frozen(kw_only=True)
class RequestPlan:
    """The requests ``records`` new records need, when nothing has to be retried."""

    tokenize: int
    batches: int
    setup: int

    @classmethod
    def for_records(cls, records: int, *, resent: int = 0) -> RequestPlan:
        """``resent`` records have a token already (a resumed job): they need no tokenize."""
        return cls(
            tokenize=records,
            batches=math.ceil((records + resent) / MAX_BATCH),
            setup=_SETUP_REQUESTS if records + resent else 0,
        )

    @property
    def total(self) -> int:
        return self.tokenize + self.batches + self.setup


def budget_per_second(rate: RateLimit) -> float:
    """The sustained rate the client's limiter allows (each lease is held ``rate.hold`` s)."""
    return rate.requests / rate.hold


def budget_eta(requests: int, rate: RateLimit) -> float:
    """Seconds ``requests`` take from a cold start. One window's worth or fewer go at once; a
    longer job is spread at the budget's pace (``rate.hold / rate.requests`` apart), and each
    later window repeats the first one a lease hold later."""
    if requests <= rate.requests:
        return 0.0
    windows, turn = divmod(requests - 1, rate.requests)
    return windows * rate.hold + turn * rate.hold / rate.requests


def format_duration(seconds: float) -> str:
    """``H:MM:SS``, rounded up: an ETA of 0.2 s shows as ``0:00:01``, not as done."""
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
