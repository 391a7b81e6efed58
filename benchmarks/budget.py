"""Figures 1 and 2: an enrollment job at the full budget, paced by our limiter and by aiolimiter.

The sandbox runs the real shape on a scaled clock (100 requests per 2 s, a 2 s block), once with
a fixed-window counter and once with a sliding one. Both limiters run the same job against the
same server in the same run; the server's journal, not the client, says what was counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import attrs

from loyaltylayer import AsyncLoyaltyLayer, Limiter, RateLimit
from loyaltylayer._ratelimit import LeaseLimiter

from ._harness import Goal, Profile, Row
from ._journal import budget_used, max_in_fixed_window, max_in_window, statuses, times
from ._peer_limiter import AiolimiterLimiter
from ._records import rows
from ._servers import CLIENT_ID, CLIENT_SECRET, PLAN_ID, SandboxProcess

__all__ = ["run"]

LIMIT = 100
RECORDS: dict[Profile, tuple[int, float]] = {
    "smoke": (120, 0.5),
    "quick": (150, 2.0),
    "full": (1000, 2.0),
}
"""Records per job and the scaled window, per profile."""


@attrs.frozen(kw_only=True)
class _Job:
    wall: float
    created: int
    attempts: int
    entries: list[dict[str, Any]]
    blocks: int | None


async def _enroll(base_url: str, limiter: Limiter, records: int) -> tuple[float, int, int]:
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=limiter) as client:
        started = time.perf_counter()
        created = 0
        async for outcome in client.enroll(rows(records), plan_id=PLAN_ID):
            created += outcome.status == "created"
        return time.perf_counter() - started, created, client.attempts


def _job(sandbox: SandboxProcess, limiter: Limiter, records: int) -> _Job:
    sandbox.reset()
    wall, created, attempts = asyncio.run(_enroll(sandbox.base_url, limiter, records))
    return _Job(
        wall=wall,
        created=created,
        attempts=attempts,
        entries=sandbox.journal(),
        blocks=limiter.blocks if isinstance(limiter, AiolimiterLimiter) else None,
    )


def _lease_cycle(used: float, window: float) -> dict[str, float]:
    """Where the budget went: each lease is reused ``window / used`` seconds after it was taken.

    Of that cycle, ``RateLimit.hold`` is by design (the window plus its margin); the rest is the
    request's own time in flight plus any moment the freed lease sat unused. That rest does not
    scale with the window, so it also says what the same job would use at 100 per 60 s.
    """
    hold = RateLimit(requests=LIMIT, per=window).hold
    rest = window / used - hold
    real = RateLimit()
    return {
        "lease_cycle_s": round(window / used, 4),
        "lease_hold_s": round(hold, 4),
        "lease_cycle_beyond_hold_ms": round(rest * 1000, 1),
        "used_ceiling_at_this_window": round(window / hold, 4),
        "projected_used_at_100_per_60s": round(real.per / (real.hold + rest), 4),
    }


def _rows(label: str, job: _Job, records: int, window: float, kind: str) -> list[Row]:
    """Budget used, 429s and wall ÷ floor for one job, judged by the server's journal."""
    requests = records + math.ceil(records / LIMIT) + 2
    floor = requests * window / LIMIT
    answered = times(job.entries, answered_only=True)
    counted = times(job.entries)
    rejected = statuses(job.entries, 429)
    details = {
        "records": records,
        "created": job.created,
        "attempts": job.attempts,
        "server_counted": len(counted),
        "limit": LIMIT,
        "window_s": window,
        "window_kind": kind,
        "max_in_any_window": max_in_window(counted, window),
        "max_in_calendar_window": max_in_fixed_window(counted, window),
        "wall_s": round(job.wall, 3),
        "floor_s": round(floor, 3),
        "blocks": job.blocks,
    }
    used = budget_used(answered, LIMIT, window)
    if used is not None:
        details |= _lease_cycle(used, window)
    return [
        Row(
            figure=f"{label}: budget used ({kind} window)",
            measured=None if used is None else used * LIMIT,
            unit="req/window",
            baseline=LIMIT,
            baseline_label="the limit",
            ratio=used,
            goal=Goal(">=", 0.98),
            details=details,
        ),
        Row(
            figure=f"{label}: 429s ({kind} window)",
            measured=rejected,
            goal=Goal("==", 0, of="measured"),
            note=f"{job.blocks} blocks" if job.blocks is not None else "",
        ),
        Row(
            figure=f"{label}: wall time ({kind} window)",
            measured=job.wall,
            unit="s",
            baseline=floor,
            baseline_label=f"floor: {requests} req at the limit",
            ratio=job.wall / floor,
            goal=Goal("<=", 1.03),
        ),
    ]


def run(profile: Profile) -> list[Row]:
    records, window = RECORDS[profile]
    ours: list[Row] = []
    peer: list[Row] = []
    for kind in ("fixed", "sliding"):
        with SandboxProcess.run(
            rate_limit=LIMIT, rate_window=window, block=window, window_kind=kind
        ) as sandbox:
            lease = LeaseLimiter(RateLimit(requests=LIMIT, per=window))
            ours += _rows("1 ours", _job(sandbox, lease, records), records, window, kind)
            aio = AiolimiterLimiter(LIMIT, window)
            peer += _rows("2 aiolimiter", _job(sandbox, aio, records), records, window, kind)
    # The peer is shown beside ours, not judged: the goals are ours.
    return ours + [attrs.evolve(row, goal=None) for row in peer]
