"""Figures 10 to 14: one budget, many users.

Everything runs against the sandbox on a scaled window (100 requests per W seconds, a block of
W), and every wait is given in windows, so a figure reads the same at the real 60 s.

* 10, 11: a "web handler" reads a pass every eighth of a window while an enrollment job uses
  the whole budget, in the same process (one in-process limiter) and in another process (one
  Redis budget): how long the handler's calls take, in windows. Without a reserve the wait is
  for the next lease to free up; with one it is the round trip. The job starts once the
  set-up's requests (a pass to read, the round trip measured on an idle budget) have freed
  their leases: a burst in a budget used to the full leaves a hole in every later window
  (leases free up one hold after they were taken), and the figure is about the job's steady
  stream.
* 12: another service on the same IP sends 20 % and 50 % of the limit (the sandbox's background
  traffic, which the SDK cannot see): what the job gets of what that traffic leaves, and how
  often the server blocked the IP once the job had adapted.
* 13: how long a call that cannot get a lease before its deadline takes to fail, unsent.
* 14: four ``loyaltylayer enroll --shard I/4`` processes on one Redis budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import attrs

from loyaltylayer import AsyncLoyaltyLayer, BudgetExhaustedError, Limiter, LimiterStats, RateLimit
from loyaltylayer._ratelimit import LeaseLimiter, LeasePriority, ServerBudget
from loyaltylayer.contrib.redis import RedisRateLimiter

from ._harness import Goal, Profile, Row, unavailable
from ._journal import budget_used, statuses, times
from ._passes import create_pass
from ._records import rows, write_csv
from ._servers import CLIENT_ID, CLIENT_SECRET, PLAN_ID, SandboxProcess, redis_server_url

__all__ = ["run"]

LIMIT = 100
SIZES: dict[Profile, dict[str, Any]] = {
    "smoke": {
        "window": 0.5,
        "records": 100,
        "shared_window": 0.5,
        "windows": 3,
        "shard": 25,
        "exhausted": 10,
    },
    "quick": {
        "window": 2.0,
        "records": 400,
        "shared_window": 1.0,
        "windows": 20,
        "shard": 100,
        "exhausted": 100,
    },
    "full": {
        "window": 2.0,
        "records": 1000,
        "shared_window": 1.0,
        "windows": 30,
        "shard": 250,
        "exhausted": 200,
    },
}
"""The window, the records of figures 10 and 11, figure 12's window (its runs last many windows:
a 1 s window keeps them short, the block is one window too) and windows measured, the records
per shard of figure 14, and the calls of figure 13."""
_WARM_UP = 5
"""Windows the shared-IP job has to learn what the other service leaves it."""
_SHARED_CONCURRENCY = 16
"""Cards the shared-IP job tokenizes at once: enough that the budget, not the round trip,
bounds it (eight in flight at a 160 ms round trip, seen on a loaded machine, is 50 a second)."""
_HANDLER_EVERY = 1 / 8
"""How often the web handler calls, in windows."""


class _Timed(Limiter):
    """A limiter that notes how long each interactive call waited for its lease."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.waits: list[float] = []

    def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lease(priority, max_wait)

    @contextlib.asynccontextmanager
    async def _lease(self, priority: LeasePriority, max_wait: float | None) -> AsyncIterator[None]:
        started = time.perf_counter()
        async with self.inner.lease(priority=priority, max_wait=max_wait):
            if priority == "interactive":
                self.waits.append(time.perf_counter() - started)
            yield

    async def block(self, seconds: float) -> None:
        await self.inner.block(seconds)

    async def blocked_for(self) -> float:
        return await self.inner.blocked_for()

    async def observe(self, budget: ServerBudget) -> None:
        await self.inner.observe(budget)

    @property
    def config(self) -> RateLimit | None:
        return self.inner.config

    @property
    def stats(self) -> LimiterStats:
        return self.inner.stats

    def bind(self, origin: str) -> Self:
        self.inner.bind(origin)
        return self

    async def aclose(self) -> None:
        await self.inner.aclose()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def _round_trip(client: AsyncLoyaltyLayer, pass_id: str) -> float:
    """The median of a few reads on an idle budget: what a call costs with no wait at all."""
    took = []
    for _ in range(9):
        started = time.perf_counter()
        await client.passes.status(pass_id)
        took.append(time.perf_counter() - started)
    return statistics.median(took)


async def _handler(
    client: AsyncLoyaltyLayer, pass_id: str, every: float, done: asyncio.Event, timed: _Timed
) -> tuple[list[float], list[float]]:
    """Read the pass every ``every`` seconds until ``done``: each call's latency, and its wait
    for a lease."""
    took: list[float] = []
    timed.waits.clear()
    while not done.is_set():
        await asyncio.sleep(every)
        started = time.perf_counter()
        await client.passes.status(pass_id)
        took.append(time.perf_counter() - started)
    return took, list(timed.waits)


async def _enroll(client: AsyncLoyaltyLayer, records: int, prefix: str) -> int:
    created = 0
    async for outcome in client.enroll(rows(records, prefix=prefix), plan_id=PLAN_ID):
        created += outcome.status == "created"
    return created


async def _same_process(base_url: str, window: float, records: int, reserve: int) -> dict[str, Any]:
    rate = RateLimit(requests=LIMIT, per=window, reserve=reserve)
    timed = _Timed(LeaseLimiter(rate))
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=timed) as client:
        pass_id = await create_pass(base_url, client)
        round_trip = await _round_trip(client, pass_id)
        await asyncio.sleep(rate.hold)  # the set-up's burst of leases has freed up
        done = asyncio.Event()
        handler = asyncio.create_task(
            _handler(client, pass_id, _HANDLER_EVERY * window, done, timed)
        )
        try:
            created = await _enroll(client, records, f"SAME{reserve}")
        finally:
            done.set()
        took, waits = await handler
    return {"took": took, "waits": waits, "round_trip": round_trip, "created": created}


def _batch_worker(base_url: str, redis_url: str, window: float, records: int) -> int:
    async def main() -> int:
        limiter = RedisRateLimiter.from_url(redis_url, requests=LIMIT, per=window)
        async with AsyncLoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=limiter, close_limiter=True
        ) as client:
            return await _enroll(client, records, "OTHER")

    return asyncio.run(main())


async def _other_process(
    base_url: str, redis_url: str, window: float, records: int
) -> dict[str, Any]:
    limiter = RedisRateLimiter.from_url(redis_url, requests=LIMIT, per=window)
    timed = _Timed(limiter)
    async with AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=timed, close_limiter=True
    ) as client:
        pass_id = await create_pass(base_url, client)
        round_trip = await _round_trip(client, pass_id)
        await asyncio.sleep(limiter.config.hold)  # the set-up's burst of leases has freed up
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            job = pool.apply_async(_batch_worker, (base_url, redis_url, window, records))
            await asyncio.sleep(2 * window)  # the job has the budget in hand by then
            done = asyncio.Event()
            handler = asyncio.create_task(
                _handler(client, pass_id, _HANDLER_EVERY * window, done, timed)
            )
            created = await asyncio.to_thread(job.get, 30 + 5 * records * window / LIMIT)
            done.set()
            took, waits = await handler
    return {"took": took, "waits": waits, "round_trip": round_trip, "created": created}


def _latency_rows(label: str, seen: dict[str, Any], window: float, reserve: int) -> list[Row]:
    took, waits = seen["took"], seen["waits"]
    p50, p99 = _percentile(took, 0.5) / window, _percentile(took, 0.99) / window
    wait_p50, wait_p99 = _percentile(waits, 0.5) / window, _percentile(waits, 0.99) / window
    round_trip = seen["round_trip"] / window
    details = {
        "calls": len(took),
        "window_s": window,
        "reserve": reserve,
        "latency_p50_ms": round(p50 * window * 1000, 2),
        "latency_p99_ms": round(p99 * window * 1000, 2),
        "latency_max_ms": round(max(took) * 1000, 2),
        "lease_wait_p50_ms": round(wait_p50 * window * 1000, 2),
        "lease_wait_p99_ms": round(wait_p99 * window * 1000, 2),
        "lease_wait_max_ms": round(max(waits) * 1000, 2),
        "round_trip_ms": round(seen["round_trip"] * 1000, 2),
        "job_created": seen["created"],
    }
    reserved = f", reserve {reserve}" if reserve else ""
    return [
        Row(
            figure=f"{label}{reserved}: latency p99",
            measured=p99,
            unit="windows",
            baseline=round_trip,
            baseline_label="an idle round trip",
            ratio=p99 / round_trip,
            goal=None if reserve else Goal("<=", 0.02, of="measured"),
            note=f"p50 {p50:.4f}",
            details=details,
        ),
        Row(
            figure=f"{label}{reserved}: wait for a lease p99",
            measured=wait_p99,
            unit="windows",
            goal=Goal("<=", 0.02, of="measured"),
            note=f"p50 {wait_p50:.4f}",
        ),
    ]


def _latency(sizes: dict[str, Any]) -> list[Row]:
    window, records = sizes["window"], sizes["records"]
    out: list[Row] = []
    with SandboxProcess.run(rate_limit=LIMIT, rate_window=window, block=window) as sandbox:
        for reserve in (0, 2):
            sandbox.reset()
            seen = asyncio.run(_same_process(sandbox.base_url, window, records, reserve))
            label = "10 interactive latency, full-budget enroll in the same process"
            out += _latency_rows(label, seen, window, reserve)
            out[-1] = _with_429s(out[-1], sandbox)
        with redis_server_url() as redis_url:
            figure = "11 interactive latency, batch in another process on one Redis budget"
            if redis_url is None:
                return [*out, unavailable(figure, "redis-server is not installed")]
            sandbox.reset()
            seen = asyncio.run(_other_process(sandbox.base_url, redis_url, window, records))
            out += _latency_rows(figure, seen, window, 0)
            out[-1] = _with_429s(out[-1], sandbox)
    return out


def _with_429s(row: Row, sandbox: SandboxProcess) -> Row:
    rejected = statuses(sandbox.journal(), 429)
    return attrs.evolve(
        row, note=f"{row.note}; {rejected} × 429" if row.note else f"{rejected} × 429"
    )


# -- 12: a shared IP ---------------------------------------------------------------------------


async def _job_for(base_url: str, window: float, windows: int) -> None:
    """Enroll until ``windows`` windows have passed, then stop (the job is not the point)."""
    rate = RateLimit(requests=LIMIT, per=window)
    records = rows(LIMIT * (windows + 2), prefix="SHARED")
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=rate) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(windows * window):
                outcomes = client.enroll(records, plan_id=PLAN_ID, concurrency=_SHARED_CONCURRENCY)
                async for _ in outcomes:
                    pass


def _blocks(rejected: list[float], block: float) -> int:
    """429s closer together than a block belong to one block."""
    count, last = 0, None
    for stamp in rejected:
        if last is None or stamp - last > block:
            count += 1
        last = stamp
    return count


def _shared(sizes: dict[str, Any]) -> list[Row]:
    window, windows = sizes["shared_window"], sizes["windows"] + _WARM_UP
    out: list[Row] = []
    for share in (0.2, 0.5):
        other = round(LIMIT * share)
        with SandboxProcess.run(
            rate_limit=LIMIT,
            rate_window=window,
            block=window,
            window_kind="sliding",
            extra=["--background-rate", str(other)],
        ) as sandbox:
            asyncio.run(_job_for(sandbox.base_url, window, windows))
            entries = sandbox.journal()
            neighbour = sandbox.background()
        start = min(e["time"] for e in entries) + _WARM_UP * window
        end = max(e["time"] for e in entries)
        adapted = [e for e in entries if e["time"] >= start]
        useful = sum(1 for e in adapted if e["status"] != 429)
        span = (end - start) / window
        left = LIMIT - other
        rejected = sorted(e["time"] for e in entries if e["status"] == 429)
        blocks_adapted = _blocks([t for t in rejected if t >= start], window)
        per_20 = blocks_adapted * 20 / span
        details = {
            "window_s": window,
            "other_per_window": other,
            "windows_measured": round(span, 1),
            "useful_per_window": round(useful / span, 2),
            "blocks_total": _blocks(rejected, window),
            "blocks_once_adapted": blocks_adapted,
            "our_429s": len(rejected),
            "other_service_sent": neighbour["sent"],
            "other_service_refused": neighbour["refused"],
        }
        label = f"12 shared IP, other traffic {round(share * 100)} %"
        out += [
            Row(
                figure=f"{label}: useful requests",
                measured=useful / span,
                unit="req/window",
                baseline=left,
                baseline_label="what the other traffic left",
                ratio=useful / span / left,
                goal=Goal(">=", 0.85),
                details=details,
            ),
            Row(
                figure=f"{label}: blocks per 20 windows once adapted",
                measured=round(per_20, 2),
                goal=Goal("<=", 3, of="measured"),
                note=f"other service refused {neighbour['refused']} of {neighbour['sent']}",
            ),
        ]
    return out


# -- 13: BudgetExhaustedError ------------------------------------------------------------------


async def _exhausted(base_url: str, limiter: Limiter, calls: int) -> tuple[list[float], int]:
    async with AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=limiter, deadline=1.0
    ) as client:
        pass_id = await create_pass(base_url)  # not from this budget: the server does not count
        for _ in range(4):  # with the token, the whole budget of 5
            await client.passes.status(pass_id)
        sent = client.attempts
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            try:
                await client.passes.status(pass_id)
            except BudgetExhaustedError:
                took.append(time.perf_counter() - started)
        return took, client.attempts - sent


def _exhausted_rows(sizes: dict[str, Any]) -> list[Row]:
    calls = sizes["exhausted"]
    out = []
    with SandboxProcess.run(rate_key="off") as sandbox, redis_server_url() as redis_url:
        limiters: list[tuple[str, Any]] = [("in-process", RateLimit(requests=5, per=60.0))]
        if redis_url is not None:
            limiters.append(
                ("Redis", lambda: RedisRateLimiter.from_url(redis_url, requests=5, per=60.0))
            )
        for name, make in limiters:
            limiter = make() if callable(make) else make
            took, sent = asyncio.run(_exhausted(sandbox.base_url, limiter, calls))
            figure = f"13 BudgetExhaustedError, {name} limiter: p99 of {calls}"
            out.append(
                Row(
                    figure=figure,
                    measured=_percentile(took, 0.99) * 1000,
                    unit="ms",
                    goal=Goal("<=", 10, of="measured"),
                    note=f"{len(took)} raised, {sent} sent; slowest {max(took) * 1000:.2f} ms",
                    details={
                        "calls": calls,
                        "raised": len(took),
                        "sent": sent,
                        "p50_ms": round(statistics.median(took) * 1000, 3),
                        "max_ms": round(max(took) * 1000, 3),
                    },
                )
            )
    return out


# -- 14: shards ------------------------------------------------------------------------------


def _shards(sizes: dict[str, Any]) -> list[Row]:
    window, per_shard = sizes["window"], sizes["shard"]
    figure = "14 four `enroll --shard I/4` processes, one Redis budget"
    with redis_server_url() as redis_url:
        if redis_url is None:
            return [unavailable(figure, "redis-server is not installed")]
        with (
            SandboxProcess.run(
                rate_limit=LIMIT, rate_window=window, block=window, window_kind="sliding"
            ) as sandbox,
            tempfile.TemporaryDirectory() as workdir,
        ):
            records = 4 * per_shard
            source = write_csv(Path(workdir) / "in.csv", records)
            env = os.environ | {
                "LOYALTYLAYER_CLIENT_ID": CLIENT_ID,
                "LOYALTYLAYER_CLIENT_SECRET": CLIENT_SECRET,
                "LOYALTYLAYER_REDIS_URL": redis_url,
            }
            # fmt: off
            argv = [
                sys.executable, "-m", "loyaltylayer", "enroll", str(source), "--plan-id", PLAN_ID,
                "--base-url", sandbox.base_url, "--rate", str(LIMIT), "--per", str(window),
            ]
            # fmt: on
            started = time.perf_counter()
            shards = [
                subprocess.Popen(
                    [*argv, "--shard", f"{i}/4"],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for i in range(4)
            ]
            codes = [shard.wait(timeout=60 + 10 * records * window / LIMIT) for shard in shards]
            wall = time.perf_counter() - started
            entries = sandbox.journal()
            passes = sandbox.passes()
    emails = [p["holder"]["email"] for p in passes]
    used = budget_used(times(entries, answered_only=True), LIMIT, window)
    details = {
        "records": records,
        "window_s": window,
        "exit_codes": codes,
        "passes": len(passes),
        "distinct_records_with_a_pass": len(set(emails)),
        "wall_s": round(wall, 2),
        "requests": len(entries),
    }
    one_each = len(passes) == len(set(emails)) == records
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
            measured=statuses(entries, 429),
            goal=Goal("==", 0, of="measured"),
        ),
        Row(
            figure=f"{figure}: records without exactly one pass",
            measured=records - len(set(emails)) + (len(passes) - len(set(emails))),
            goal=Goal("==", 0, of="measured"),
            note="one pass per record" if one_each else "",
        ),
    ]


def run(profile: Profile) -> list[Row]:
    sizes = SIZES[profile]
    return [*_latency(sizes), *_shared(sizes), *_exhausted_rows(sizes), *_shards(sizes)]
