"""Four worker processes share one RedisRateLimiter against one per-IP sandbox: the promise holds.

Small sizes on a scaled window (100 requests per 1 s, 1 s block), judged by the sandbox's own
journal: every record created, not one 429, and the server's count in its fullest window exactly
the limit, never over it. How much of the budget the four use over the run depends on how fast
a shared machine starts and schedules four processes, so that is a measured figure (figure 9 of
``benchmarks/``, the same workers at a larger size), not an assertion here; a limiter that
starved them would still fail here, on the workers' deadline (30 s to start, then five times
the time their requests take at the limit).
"""

from __future__ import annotations

from benchmarks._servers import SandboxProcess
from benchmarks.redis_workers import LIMIT, judge, run_workers

PER = 1.0
RECORDS_PER_WORKER = 60


def test_four_workers_share_one_budget(redis_url: str) -> None:
    with SandboxProcess.run(
        rate_limit=LIMIT, rate_window=PER, block=PER, window_kind="sliding"
    ) as sandbox:
        _wall, created = run_workers(
            sandbox.base_url, redis_url, per=PER, records=RECORDS_PER_WORKER
        )
        seen = judge(sandbox.journal(), per=PER)
    assert created == 4 * RECORDS_PER_WORKER
    assert seen["rejected_429"] == 0, seen
    assert seen["max_in_any_window"] == LIMIT, seen
