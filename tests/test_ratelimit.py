"""The lease limiter keeps the server's count at or under N per window, in virtual time."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import os
import threading
import time
from collections.abc import Coroutine, Generator, Iterator, Sequence
from typing import Any

import attrs
import pytest
import uvloop
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import loyaltylayer as ll
from loyaltylayer._ratelimit import (
    LeaseLimiter,
    LeasePriority,
    Limiter,
    LimiterStats,
    RateLimit,
    UnlimitedLimiter,
    _ceil_us,
    _seconds_to_ns,
    origin_of,
    shared_limiter,
)

pytestmark = pytest.mark.timeout(30)


def now() -> float:
    return asyncio.get_running_loop().time()


def counts(limiter: Limiter) -> tuple[int, int, int, int]:
    """Leases started, in flight, waited for and held."""
    stats = limiter.stats
    return stats.started, stats.in_flight, stats.waiting, stats.held


async def hold_lease(limiter: Limiter, until: asyncio.Event) -> None:
    async with limiter.lease():
        await until.wait()


# -- checkers of the server's view ----------------------------------------------------------------


def max_in_closed_window(times: Sequence[float], per: float) -> int:
    """The most events in any closed window ``[t, t + per]``."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + per) - i for i, t in enumerate(ordered)), default=0
    )


def max_in_fixed_window(times: Sequence[float], per: float, offset: float) -> int:
    """The most events in one calendar window ``[offset + k*per, offset + (k+1)*per)``."""
    counts: dict[int, int] = {}
    for t in times:
        bucket = int((t - offset) // per)
        counts[bucket] = counts.get(bucket, 0) + 1
    return max(counts.values(), default=0)


def test_checkers_catch_a_send_stamped_burst() -> None:
    # 100 at 0, 100 at 60.0: what a sliding log stamped at send time allows.
    times = [0.0] * 100 + [60.0] * 100
    assert max_in_closed_window(times, 60.0) == 200
    assert max_in_closed_window([0.0] * 100 + [60.0], 60.0) == 101
    assert max_in_closed_window([0.0] * 100 + [60.000001], 60.0) == 100
    # 100 just before a minute boundary and 100 just after: fine per minute, not per 60 s.
    straddling = [59.9] * 100 + [60.1] * 100
    assert max_in_fixed_window(straddling, 60.0, offset=0.0) == 100
    assert max_in_fixed_window(straddling, 60.0, offset=30.0) == 200


# -- RateLimit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"requests": 0}, "requests"),
        ({"requests": -5}, "requests"),
        ({"requests": 2.5}, "requests"),
        ({"requests": True}, "requests"),
        ({"per": 0}, "per"),
        ({"per": -60.0}, "per"),
        ({"per": float("nan")}, "per"),
        ({"per": float("inf")}, "per"),
        ({"margin": 0.0}, "margin"),
        ({"margin": -1.0}, "margin"),
    ],
)
def test_rate_limit_rejects_non_positive_values_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^RateLimit\.{field} must be a positive"):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_hold() -> None:
    assert RateLimit() == RateLimit(requests=100, per=60.0, margin=None)
    assert RateLimit().hold == 61.0
    assert RateLimit(per=2.0).hold == pytest.approx(2.0 + 2.0 / 60)
    assert RateLimit(per=120.0).hold == 122.0
    assert RateLimit(per=60.0, margin=0.5).hold == 60.5
    assert RateLimit(requests=5, per=1.0, margin=0.25).hold == 1.25


def test_rate_limit_is_frozen_and_keyword_only() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RateLimit().requests = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        RateLimit(100)  # type: ignore[call-arg]


# -- the safety property -----------------------------------------------------------------------


@attrs.frozen
class Call:
    gap: float  # seconds after the previous call arrives
    latency: float
    counted_at: float  # where between send and reply the server counts it, as a fraction
    fails: bool


call_shapes = st.builds(
    Call,
    gap=st.just(0.0),
    # A heavy tail: a SYN retransmit, a slow provider.
    latency=st.one_of(st.floats(0.001, 0.3), st.floats(0.3, 2.0), st.floats(5.0, 15.0)),
    counted_at=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
    fails=st.booleans(),
)
bursts = st.tuples(
    st.integers(1, 130),  # calls
    st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.0, 0.6)),  # between calls
    st.one_of(st.just(0.0), st.floats(0.0, 90.0)),  # pause before the burst
)


@st.composite
def traffic(draw: st.DrawFn) -> list[Call]:
    """A few bursts, some big enough to use the whole budget, separated by pauses."""
    shapes = draw(st.lists(call_shapes, min_size=1, max_size=40))
    pattern: list[Call] = []
    for size, spacing, pause in draw(st.lists(bursts, min_size=1, max_size=3)):
        for i in range(size):
            shape = shapes[len(pattern) % len(shapes)]
            pattern.append(attrs.evolve(shape, gap=spacing if i else pause))
    return pattern


async def server_counts(limiter: LeaseLimiter, pattern: list[Call], scale: float) -> list[float]:
    """Run the calls; return when the server counted each one (between send and reply)."""
    counted: list[float] = []

    async def one(call: Call, arrival: float) -> None:
        await asyncio.sleep(arrival)
        async with limiter.lease():
            sent = now()
            try:
                await asyncio.sleep(call.latency * scale)
                if call.fails:
                    raise ConnectionResetError
            finally:
                counted.append(sent + call.counted_at * (now() - sent))

    arrival = 0.0
    tasks = []
    for call in pattern:
        arrival += call.gap * scale
        tasks.append(one(call, arrival))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, ConnectionResetError) for r in results)
    assert limiter.stats.in_flight == 0
    assert limiter.stats.waiting == 0
    assert limiter.stats.started == len(pattern)
    return counted


def assert_never_over(counted: list[float], limit: RateLimit) -> None:
    assert max_in_closed_window(counted, limit.per) <= limit.requests
    start = min(counted)
    for i in range(120):
        offset = start + limit.per * i / 120
        assert max_in_fixed_window(counted, limit.per, offset) <= limit.requests


@pytest.mark.looptime
@pytest.mark.parametrize("per", [60.0, 2.0])
@settings(
    max_examples=25,
    database=None,
    # Shrinking a few hundred timed calls takes minutes; the unshrunk example is report enough.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pattern=traffic())
async def test_server_never_counts_more_than_n_per_window(pattern: list[Call], per: float) -> None:
    limit = RateLimit(requests=100, per=per)
    counted = await server_counts(LeaseLimiter(limit), pattern, scale=per / 60.0)
    assert_never_over(counted, limit)


@pytest.mark.looptime
async def test_heavy_tail_worst_case() -> None:
    # Counted at the very end of a 15 s reply, then a burst admitted the moment leases free up.
    limit = RateLimit(requests=100, per=60.0)
    pattern = [Call(gap=0.0, latency=15.0, counted_at=1.0, fails=False)] * 100 + [
        Call(gap=0.0, latency=0.001, counted_at=0.0, fails=False)
    ] * 250
    counted = await server_counts(LeaseLimiter(limit), pattern, scale=1.0)
    assert_never_over(counted, limit)
    assert now() == pytest.approx(15.0 + 61.0 + 0.001 + 61.0 + 0.001 + 61.0 + 0.001)


# -- throughput --------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_sustains_the_budget() -> None:
    limit = RateLimit(requests=100, per=60.0)
    limiter = LeaseLimiter(limit)
    starts: list[float] = []

    async def one() -> None:
        async with limiter.lease():
            starts.append(now())
            await asyncio.sleep(0.001)

    t0 = now()
    await asyncio.gather(*(one() for _ in range(1000)))
    starts = [s - t0 for s in starts]

    # Each round of 100 starts when the previous round's leases expire: reply + hold.
    cycle = 0.001 + 61.0
    for k in range(10):
        assert starts[100 * k : 100 * (k + 1)] == pytest.approx([k * cycle] * 100, abs=1e-9)
    assert now() - t0 == pytest.approx(9 * cycle + 0.001, abs=1e-9)
    # In steady state every window of one cycle holds exactly N starts: N * per / cycle.
    per_window = [sum(k * cycle <= s < (k + 1) * cycle for s in starts) for k in range(10)]
    assert per_window == [100] * 10
    rate = 100 * limit.per / cycle
    assert rate >= 0.98 * limit.requests
    assert max_in_closed_window(starts, limit.per) == 100
    assert counts(limiter) == (1000, 0, 0, 100)
    await asyncio.sleep(61.0)
    assert limiter.stats.held == 0


@pytest.mark.looptime
async def test_a_lease_frees_exactly_hold_after_its_reply() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=60.0, margin=0.5))
    async with limiter.lease():
        await asyncio.sleep(3.0)
    t_exit = now()
    async with limiter.lease():
        assert now() - t_exit == pytest.approx(60.5, abs=1e-6)


# -- the server block --------------------------------------------------------------------------


@pytest.mark.looptime
async def test_block_stops_new_leases_and_then_everything_resumes() -> None:
    limit = RateLimit(requests=10, per=1.0, adaptive=False)
    limiter = LeaseLimiter(limit)
    t0 = now()
    granted: list[float] = []

    async def one() -> None:
        async with limiter.lease():
            granted.append(now() - t0)

    async with limiter.lease():  # in flight through the block, which does not touch it
        await limiter.block(10.0)
        assert await limiter.blocked_for() == 10.0
        tasks = [asyncio.create_task(one()) for _ in range(25)]
        await asyncio.sleep(4.0)
        assert await limiter.blocked_for() == pytest.approx(6.0)
        assert limiter.stats.waiting == 25
        await asyncio.sleep(8.0)
    await asyncio.gather(*tasks)
    assert await limiter.blocked_for() == 0.0
    assert min(granted) == 10.0
    # 9 free leases at the end of the block, the same 9 again one hold later, and so on.
    assert granted == pytest.approx(
        [10.0] * 9 + [10.0 + limit.hold] * 9 + [10.0 + 2 * limit.hold] * 7, abs=1e-6
    )


@pytest.mark.looptime
async def test_a_shorter_block_never_shortens_a_longer_one() -> None:
    limiter = LeaseLimiter(RateLimit(adaptive=False))
    assert await limiter.blocked_for() == 0.0
    await limiter.block(60.0)
    await asyncio.sleep(10.0)
    await limiter.block(5.0)
    assert await limiter.blocked_for() == pytest.approx(50.0)
    await limiter.block(70.0)
    assert await limiter.blocked_for() == pytest.approx(70.0)
    t0 = now()
    async with limiter.lease():
        assert now() - t0 == pytest.approx(70.0)
    assert await limiter.blocked_for() == 0.0


@pytest.mark.looptime
async def test_a_block_set_while_waiting_for_a_lease_delays_the_grant() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=10.0, margin=1.0, adaptive=False))
    async with limiter.lease():
        pass
    t0 = now()
    granted = asyncio.Event()
    waiter = asyncio.create_task(hold_lease(limiter, granted))
    await asyncio.sleep(5.0)
    await limiter.block(30.0)  # ends at 35 s, after the lease frees at 11 s
    await asyncio.sleep(29.0)
    assert limiter.stats.waiting == 1
    await asyncio.sleep(1.0)
    assert limiter.stats.in_flight == 1
    assert now() - t0 == pytest.approx(35.0)
    granted.set()
    await waiter


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
async def test_block_rejects_nonsense(seconds: float) -> None:
    for limiter in (LeaseLimiter(), UnlimitedLimiter()):
        with pytest.raises(ValueError, match="block seconds"):
            await limiter.block(seconds)


# -- priority, fairness, cancellation ----------------------------------------------------------


@pytest.mark.looptime
async def test_priority_waiter_overtakes_500_queued_calls() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=1.0))
    order: list[str] = []

    async def one(name: str, priority: LeasePriority = "batch") -> None:
        async with limiter.lease(priority=priority):
            order.append(name)

    async with limiter.lease():
        tasks = [asyncio.create_task(one(f"n{i}")) for i in range(500)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one("token", priority="token")))
        await asyncio.sleep(0.5)
        assert limiter.stats.waiting == 501
    await asyncio.sleep(5.0)
    assert order[:3] == ["token", "n0", "n1"]
    assert limiter.stats.waiting == 497
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert limiter.stats.waiting == 0


@pytest.mark.looptime
async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = LeaseLimiter(RateLimit(requests=3, per=1.0))
    order: list[int] = []

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.01)
        async with limiter.lease():
            order.append(i)
            await asyncio.sleep(0.3 if i % 2 else 0.1)

    await asyncio.gather(*(one(i) for i in range(40)))
    assert order == list(range(40))


@pytest.mark.looptime
async def test_a_newcomer_does_not_overtake_the_queue_the_instant_a_lease_frees() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=60.0))
    order: list[str] = []

    async def one(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with limiter.lease():
            order.append(name)

    async with limiter.lease():
        pass
    await asyncio.gather(one("newcomer", 61.0), one("queued", 1.0))
    assert order == ["queued", "newcomer"]


@pytest.mark.looptime
async def test_a_waiter_cancelled_while_waiting_takes_nothing() -> None:
    limit = RateLimit(requests=2, per=10.0)
    limiter = LeaseLimiter(limit)
    done = asyncio.Event()
    async with limiter.lease(), limiter.lease():
        waiters = [asyncio.create_task(hold_lease(limiter, done)) for _ in range(3)]
        await asyncio.sleep(1.0)
        assert counts(limiter) == (2, 2, 3, 2)
        waiters[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        assert counts(limiter) == (2, 2, 2, 2)
    t_exit = now()
    await asyncio.sleep(limit.hold - 0.001)
    assert counts(limiter) == (2, 0, 2, 2)
    await asyncio.sleep(0.001)
    assert counts(limiter) == (4, 2, 0, 2)
    assert now() - t_exit == pytest.approx(limit.hold)
    done.set()
    await asyncio.gather(*waiters[1:])
    assert counts(limiter) == (4, 0, 0, 2)


@pytest.mark.looptime
async def test_the_timer_goes_with_the_last_waiter() -> None:
    # A timer references its loop; left behind, it would keep a closed loop's limiter alive.
    scheduled = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    limiter = LeaseLimiter(RateLimit(requests=1, per=60.0))
    async with limiter.lease():
        pass
    waiter = asyncio.create_task(hold_lease(limiter, asyncio.Event()))
    await asyncio.sleep(1.0)
    assert len(scheduled) == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(scheduled) == 0
    assert counts(limiter) == (1, 0, 0, 1)


@pytest.mark.looptime
async def test_a_waiter_cancelled_after_its_grant_gives_the_lease_back() -> None:
    limiter = LeaseLimiter(RateLimit(requests=2, per=10.0, adaptive=False))
    await limiter.block(5.0)
    got: list[str] = []
    tasks: dict[str, asyncio.Task[None]] = {}

    async def one(name: str) -> None:
        async with limiter.lease():
            got.append(name)
            if name == "a":
                # "b" was granted in the same instant and has not run yet.
                tasks["b"].cancel()
            await asyncio.sleep(1.0)

    for name in "abc":
        tasks[name] = asyncio.create_task(one(name))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert tasks["b"].cancelled()
    assert got == ["a", "c"]
    assert now() == pytest.approx(6.0)  # "c" got b's lease at once, when the block ended
    assert counts(limiter) == (2, 0, 0, 2)


@pytest.mark.looptime
async def test_cancellations_racing_a_grant_leak_nothing() -> None:
    limiter = LeaseLimiter(RateLimit(requests=2, per=10.0, adaptive=False))
    await limiter.block(5.0)
    got: list[str] = []
    tasks: dict[str, asyncio.Task[None]] = {}

    async def one(name: str) -> None:
        async with limiter.lease():
            got.append(name)
            if name == "g":
                # "x" was granted with "g" and has not run yet; "a" still waits. "x" hands its
                # lease on past the cancelled "a" to "b" before "a" runs to remove itself.
                tasks["x"].cancel()
                tasks["a"].cancel()
            await asyncio.sleep(1.0)

    for name in "gxab":
        tasks[name] = asyncio.create_task(one(name))
        await asyncio.sleep(0)
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "CancelledError",
        "CancelledError",
        "NoneType",
    ]
    assert got == ["g", "b"]
    assert counts(limiter) == (2, 0, 0, 2)


@pytest.mark.looptime
@pytest.mark.parametrize("ending", ["exception", "cancelled"])
async def test_a_failed_attempt_still_starts_the_hold(ending: str) -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=60.0))

    async def attempt() -> None:
        async with limiter.lease():
            await asyncio.sleep(2.0)
            raise ConnectionResetError

    task = asyncio.create_task(attempt())
    if ending == "cancelled":
        await asyncio.sleep(1.0)
        task.cancel()
    with pytest.raises((ConnectionResetError, asyncio.CancelledError)):
        await task
    t_exit = now()
    assert counts(limiter) == (1, 0, 0, 1)
    async with limiter.lease():
        assert now() - t_exit == pytest.approx(61.0)


class Resumptions:
    """Counts how often tasks run: each run of a task is one ``send`` or ``throw`` to its
    coroutine, so a waiter woken only to find nothing free and wait again counts twice."""

    def __init__(self) -> None:
        self.count = 0

    def task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(_Counted(coro, self))


class _Counted(Coroutine[Any, Any, None]):
    def __init__(self, coro: Coroutine[Any, Any, None], resumptions: Resumptions) -> None:
        self._coro = coro
        self._resumptions = resumptions

    def send(self, value: Any) -> Any:
        self._resumptions.count += 1
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._resumptions.count += 1
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        return self._coro.__await__()


@pytest.mark.looptime
async def test_ten_thousand_waiters_one_timer_and_no_herd() -> None:
    limiter = LeaseLimiter(RateLimit(requests=100, per=60.0))
    loop = asyncio.get_running_loop()
    resumptions = Resumptions()
    done = 0

    async def one() -> None:
        nonlocal done
        async with limiter.lease():
            await asyncio.sleep(0.001)
        done += 1

    t0 = now()
    tasks = [resumptions.task(one()) for _ in range(10_000)]
    await asyncio.sleep(30.0)
    assert counts(limiter) == (100, 0, 9900, 100)
    # One timer for the earliest expiry, not one per waiter.
    assert len(loop._scheduled) <= 2  # type: ignore[attr-defined]
    await asyncio.gather(*tasks)
    assert done == 10_000
    assert now() - t0 == pytest.approx(99 * 61.001 + 0.001, abs=1e-6)
    # Each task runs to its lease (at once for the first 100, else to wait), once more when its
    # lease is granted, and once after its request: no waiter is ever woken in vain.
    assert resumptions.count == 100 * 2 + 9900 * 3


# -- the unlimited limiter ---------------------------------------------------------------------


@pytest.mark.looptime
async def test_unlimited_limiter_does_not_pace_but_obeys_a_block() -> None:
    limiter: Limiter = UnlimitedLimiter()
    t0 = now()
    release = asyncio.Event()
    holders = [asyncio.create_task(hold_lease(limiter, release)) for _ in range(1000)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*holders)
    assert now() == t0
    await limiter.block(60.0)
    await limiter.block(1.0)
    assert await limiter.blocked_for() == 60.0
    granted: list[float] = []

    async def one() -> None:
        async with limiter.lease():
            granted.append(now() - t0)

    async def extend() -> None:
        await asyncio.sleep(30.0)
        await limiter.block(60.0)  # a second 429 during the first block

    await asyncio.gather(extend(), *(one() for _ in range(50)))
    assert granted == pytest.approx([90.0] * 50)
    assert await limiter.blocked_for() == 0.0


# -- event loops -------------------------------------------------------------------------------


def test_nothing_is_bound_before_first_use() -> None:
    limiter = LeaseLimiter()
    assert counts(limiter) == (0, 0, 0, 0)
    assert limiter.config == RateLimit()
    assert repr(limiter) == (
        "LeaseLimiter(RateLimit(requests=100, per=60.0, margin=None, reserve=0, adaptive=True))"
    )


def test_a_limiter_keeps_its_budget_across_loops_of_the_real_clock() -> None:
    """A second ``asyncio.run`` (a one-off loop per request, as asgiref makes) reads the same
    monotonic clock: the server has not forgotten the first loop's requests, nor its block."""
    limiter = LeaseLimiter(RateLimit(requests=1, per=3600.0, adaptive=False))
    unlimited = UnlimitedLimiter()

    async def first() -> None:
        async with limiter.lease(), unlimited.lease():
            pass
        await limiter.block(600.0)
        await unlimited.block(600.0)

    async def second() -> tuple[float, float, float | None]:
        with pytest.raises(ll.BudgetExhaustedError) as info:
            async with limiter.lease(max_wait=1.0):
                pass
        return await limiter.blocked_for(), await unlimited.blocked_for(), info.value.retry_after

    asyncio.run(first())
    blocked, unlimited_blocked, retry_after = asyncio.run(second())
    assert blocked == pytest.approx(600.0, abs=1.0)
    assert unlimited_blocked == pytest.approx(600.0, abs=1.0)
    assert retry_after == pytest.approx(limiter.config.hold, abs=1.0)
    gc.collect()
    assert counts(limiter) == (1, 0, 0, 1)


class _OwnClockLoop(asyncio.SelectorEventLoop):
    """A loop whose time is not the monotonic clock (as a virtual-time loop's is not)."""

    def time(self) -> float:
        return super().time() + 1000.0


def test_a_loop_of_another_clock_starts_afresh() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=3600.0, adaptive=False))

    async def use() -> float:
        async with limiter.lease():
            pass
        await limiter.block(600.0)
        return await limiter.blocked_for()

    assert asyncio.run(use()) == pytest.approx(600.0, abs=1.0)
    loop = _OwnClockLoop()
    try:
        blocked = loop.run_until_complete(asyncio.wait_for(use(), 5.0))
        assert blocked == pytest.approx(600.0, abs=1.0)
    finally:
        loop.close()
    assert limiter.stats.started == 1  # counted afresh


class _VirtualClockLoop(asyncio.SelectorEventLoop):
    """A loop whose time starts at 0, as a virtual-time (looptime) loop's does."""

    def __init__(self) -> None:
        super().__init__()
        self._zero = time.monotonic()

    def time(self) -> float:
        return super().time() - self._zero


@contextlib.contextmanager
def _leased_and_blocked_on_a_running_loop(limiter: LeaseLimiter) -> Iterator[None]:
    """A real-clock loop that keeps running on a thread, as the sync portal's does, after it
    took a lease of ``limiter`` and set a 600 s block."""
    portal = asyncio.new_event_loop()
    runner = threading.Thread(target=portal.run_forever, daemon=True)
    runner.start()

    async def lease_and_block() -> None:
        async with limiter.lease():
            pass
        await limiter.block(600.0)

    try:
        asyncio.run_coroutine_threadsafe(lease_and_block(), portal).result(5)
        assert portal.is_running()
        yield
    finally:
        portal.call_soon_threadsafe(portal.stop)
        runner.join(5)
        portal.close()


def test_a_loop_of_another_clock_never_shares_a_running_loops_budget() -> None:
    """A virtual-time test in a process whose sync portal still runs an earlier test's loop on
    the same origin (a port used again): that loop's leases and block, in monotonic time, would
    read as hours on the test's clock."""
    limiter = LeaseLimiter(RateLimit(requests=1, per=3600.0, adaptive=False))

    async def lease_at_once() -> float:
        async with limiter.lease(max_wait=1.0):
            pass
        return await limiter.blocked_for()

    virtual = _VirtualClockLoop()
    try:
        with _leased_and_blocked_on_a_running_loop(limiter):
            assert virtual.run_until_complete(lease_at_once()) == 0.0
            assert limiter.stats.started == 1  # the virtual loop's own budget
    finally:
        virtual.close()


@pytest.mark.looptime
async def test_a_forked_child_starts_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=60.0))
    async with limiter.lease():
        pass
    await limiter.block(30.0)
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)
    # The child's copy of the loop looks "running", but its leases belong to the parent.
    assert await limiter.blocked_for() == 0.0
    t0 = now()
    async with limiter.lease():
        assert now() == t0


def test_a_uvloop_loop_shares_the_budget_of_an_asyncio_loop() -> None:
    """uvicorn runs on uvloop where it is installed, beside the sync portal's asyncio loop: both
    read the monotonic clock, so they draw on one budget and see one block."""
    limiter = LeaseLimiter(RateLimit(requests=1, per=3600.0, adaptive=False))

    async def on_uvloop() -> tuple[float, float | None]:
        with pytest.raises(ll.BudgetExhaustedError) as info:
            async with limiter.lease(max_wait=1.0):
                pass
        return await limiter.blocked_for(), info.value.retry_after

    with _leased_and_blocked_on_a_running_loop(limiter):
        blocked, retry_after = uvloop.run(on_uvloop())
    assert blocked == pytest.approx(600.0, abs=1.0)
    assert retry_after == pytest.approx(limiter.config.hold, abs=1.0)  # the asyncio loop's lease
    assert limiter.stats.started == 1


def test_loops_running_at_once_share_one_budget() -> None:
    """An async app's loop and the sync portal's loop draw on one budget: a lease freed on one
    loop is handed to a waiter on the other, one hold after its reply."""
    limiter = LeaseLimiter(RateLimit(requests=1, per=0.15))
    waiting = threading.Event()
    granted: list[float] = []

    async def main() -> None:
        async with limiter.lease():
            worker = threading.Thread(target=lambda: asyncio.run(other_loop()))
            worker.start()
            await asyncio.to_thread(waiting.wait, 5)
            while limiter.stats.waiting != 1:  # noqa: ASYNC110 - the waiter is on another loop
                await asyncio.sleep(0.001)
            released = time.monotonic()
        await asyncio.to_thread(worker.join, 5)
        assert not worker.is_alive()
        assert granted[0] - released >= limiter.config.hold

    async def other_loop() -> None:
        waiting.set()
        async with limiter.lease():
            granted.append(time.monotonic())

    asyncio.run(main())
    assert limiter.stats.started == 2
    assert limiter.stats.waiting == 0


# -- shared_limiter ----------------------------------------------------------------------------


async def test_shared_limiter_is_one_per_origin_and_config() -> None:
    limit = RateLimit()
    a = shared_limiter("https://api.loyaltylayer.example", limit)
    assert shared_limiter("https://api.loyaltylayer.example", RateLimit()) is a
    assert shared_limiter("HTTPS://API.LoyaltyLayer.example:443/v1/passes", limit) is a
    assert shared_limiter("https://api.loyaltylayer.example:8443", limit) is not a
    assert shared_limiter("http://api.loyaltylayer.example", limit) is not a
    assert shared_limiter("https://sandbox.loyaltylayer.example", limit) is not a
    assert shared_limiter("https://api.loyaltylayer.example", RateLimit(requests=50)) is not a
    assert shared_limiter("http://[::1]:8080", limit) is shared_limiter("http://[::1]:8080/", limit)
    assert a.config is limit


def test_shared_limiter_is_one_per_process_and_needs_no_loop() -> None:
    limiter = shared_limiter("https://api.loyaltylayer.example", RateLimit(requests=3))
    assert limiter.stats == LimiterStats(limit=3)

    async def get() -> LeaseLimiter:
        return shared_limiter("https://api.loyaltylayer.example", RateLimit(requests=3))

    assert asyncio.run(get()) is limiter
    got: list[LeaseLimiter] = []
    worker = threading.Thread(target=lambda: got.append(asyncio.run(get())))
    worker.start()
    worker.join()
    assert got == [limiter]


@pytest.mark.parametrize(
    "origin", ["api.loyaltylayer.example", "/v1/passes", "", "https://user:s3cret@"]
)
async def test_shared_limiter_rejects_a_relative_origin_without_echoing_it(origin: str) -> None:
    with pytest.raises(ValueError, match="absolute URL") as info:
        shared_limiter(origin, RateLimit())
    assert "s3cret" not in str(info.value)


# -- helpers -----------------------------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.timeout(5)
async def test_float_clock_readings_never_livelock() -> None:
    # The loop time 2.03 reads as 2029999999.9999998 ns: truncated rather than rounded, the
    # 29th deadline (29 x 70 ms) would never be reached and its timer would refire forever.
    assert int(2.03 * 1e9) < 2_030_000_000
    limiter = LeaseLimiter(RateLimit(requests=1, per=0.05, margin=0.02))
    t0 = now()
    for _ in range(100):
        async with limiter.lease():
            pass
    assert now() - t0 == pytest.approx(99 * 0.07)


@pytest.mark.looptime
@pytest.mark.timeout(5)
async def test_sub_microsecond_holds_and_blocks_still_advance() -> None:
    limit = RateLimit(requests=3, per=0.1000003, margin=0.0000007)
    limiter = LeaseLimiter(limit)

    async def one() -> None:
        async with limiter.lease():
            await asyncio.sleep(0.0000001)

    await limiter.block(0.0000004)
    await UnlimitedLimiter().block(0.0000004)
    await asyncio.gather(*(one() for _ in range(30)))
    assert limiter.stats.started == 30


@pytest.mark.parametrize(
    ("ns", "seconds"),
    [
        (0, 0.0),
        (1, 0.000001),
        (999, 0.000001),
        (1000, 0.000001),
        (1001, 0.000002),
        (61_000_000_000, 61.0),
        (2_033_333_334, 2.033334),
    ],
)
def test_ceil_us_rounds_wake_ups_up_to_the_microsecond(ns: int, seconds: float) -> None:
    assert _ceil_us(ns) == seconds


def test_seconds_to_ns_rounds_up() -> None:
    assert _seconds_to_ns(61.0) == 61_000_000_000
    assert _seconds_to_ns(RateLimit(per=2.0).hold) == 2_033_333_334
    assert _seconds_to_ns(1e-10) == 1


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.loyaltylayer.example", "https://api.loyaltylayer.example:443"),
        ("HTTPS://API.LoyaltyLayer.Example/v1/passes?x=1", "https://api.loyaltylayer.example:443"),
        ("http://api.loyaltylayer.example", "http://api.loyaltylayer.example:80"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://user:s3cret@api.loyaltylayer.example", "https://api.loyaltylayer.example:443"),
        ("unix://sandbox", "unix://sandbox"),
    ],
)
def test_origin(url: str, origin: str) -> None:
    assert origin_of(url) == origin
