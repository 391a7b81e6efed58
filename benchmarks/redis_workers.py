"""Figure 9: four worker processes, one sandbox, one budget shared through Redis.

Each worker enrolls its own share of the records with its own client and its own
``RedisRateLimiter`` on one real redis-server; the sandbox counts per IP (all workers are
127.0.0.1), so only the shared budget keeps them under its limit. The journal says whether
it did: no 429, no window over the limit, and how much of the budget the four used together.
"""

from __future__ import annotations

import asyncio
import faulthandler
import multiprocessing
import time
from typing import Any

import attrs

from loyaltylayer import AsyncLoyaltyLayer
from loyaltylayer.contrib.redis import RedisRateLimiter

from ._harness import Goal, Profile, Row, unavailable
from ._journal import budget_used, max_in_window, statuses, times
from ._records import rows
from ._servers import CLIENT_ID, CLIENT_SECRET, PLAN_ID, SandboxProcess, redis_server_url

__all__ = ["WorkersResult", "run", "run_workers"]

LIMIT = 100
WORKERS = 4
RECORDS: dict[Profile, tuple[int, float]] = {
    "smoke": (40, 1.0),
    "quick": (50, 2.0),
    "full": (250, 2.0),
}
"""Records per worker and the scaled window, per profile."""


@attrs.frozen(kw_only=True)
class WorkersResult:
    wall: float
    created: int
    entries: list[dict[str, Any]]


async def _enroll(base_url: str, redis_url: str, per: float, worker: int, records: int) -> int:
    limiter = RedisRateLimiter.from_url(redis_url, requests=LIMIT, per=per).bind(base_url)
    try:
        async with AsyncLoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=limiter
        ) as client:
            created = 0
            records_of_worker = rows(records, prefix=f"W{worker}")
            async for outcome in client.enroll(records_of_worker, plan_id=PLAN_ID):
                created += outcome.status == "created"
            return created
    finally:
        await limiter.aclose()


def _worker(base_url: str, redis_url: str, per: float, worker: int, records: int) -> int:
    # A worker that hangs prints where it is stuck and exits, instead of stalling the run.
    faulthandler.dump_traceback_later(_deadline(per, records), exit=True)
    try:
        return asyncio.run(_enroll(base_url, redis_url, per, worker, records))
    finally:
        faulthandler.cancel_dump_traceback_later()


def _deadline(per: float, records: int) -> float:
    """Generous: five times the time all workers' requests take at the limit, plus start-up."""
    return 30.0 + 5 * WORKERS * (records + 3) * per / LIMIT


def run_workers(
    base_url: str, redis_url: str, *, per: float, records: int, workers: int = WORKERS
) -> tuple[float, int]:
    """``workers`` processes each enrolling ``records``; wall seconds and passes created."""
    # spawn: each worker is a fresh interpreter, as separate deployments would be.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        started = time.perf_counter()
        results = pool.starmap_async(
            _worker, [(base_url, redis_url, per, i, records) for i in range(workers)]
        ).get(timeout=_deadline(per, records) + 10)
        return time.perf_counter() - started, sum(results)


def judge(entries: list[dict[str, Any]], *, per: float) -> dict[str, Any]:
    """What the server saw: 429s, the fullest window, the budget used (answered requests)."""
    counted = times(entries)
    return {
        "requests": len(counted),
        "rejected_429": statuses(entries, 429),
        "max_in_any_window": max_in_window(counted, per),
        "budget_used": budget_used(times(entries, answered_only=True), LIMIT, per),
    }


def run(profile: Profile) -> list[Row]:
    records, per = RECORDS[profile]
    figure = f"9 {WORKERS} workers, one Redis budget"
    with redis_server_url() as redis_url:
        if redis_url is None:
            return [unavailable(figure, "redis-server is not installed")]
        with SandboxProcess.run(
            rate_limit=LIMIT, rate_window=per, block=per, window_kind="sliding"
        ) as sandbox:
            wall, created = run_workers(sandbox.base_url, redis_url, per=per, records=records)
            seen = judge(sandbox.journal(), per=per)
    details = {
        "workers": WORKERS,
        "records_per_worker": records,
        "created": created,
        "limit": LIMIT,
        "window_s": per,
        "wall_s": round(wall, 2),
        **seen,
    }
    used = seen["budget_used"]
    return [
        Row(
            figure=f"{figure}: budget used",
            measured=None if used is None else used * LIMIT,
            unit="req/window",
            baseline=LIMIT,
            baseline_label="the limit",
            ratio=used,
            goal=Goal(">=", 0.95),
            details=details,
        ),
        Row(
            figure=f"{figure}: 429s",
            measured=seen["rejected_429"],
            goal=Goal("==", 0, of="measured"),
            note=f"fullest window {seen['max_in_any_window']} of {LIMIT}",
        ),
    ]
