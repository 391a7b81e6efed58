"""RedisRateLimiter against a real redis-server: one budget for coroutines, processes and clocks.

Redis ``TIME`` is real time, so windows are scaled down (10 requests per 0.5 s) instead of
faked. Grant and release times are read from Redis ``TIME`` inside each lease: the grant
happened before the first reading and the release after the second, so if these readings keep
the promise, the real lease times do too.

That the whole budget can be used is shown by a window that counts exactly N. How much of it a
run uses over time depends on how a shared machine schedules the callers, so that is measured in
``benchmarks/`` (figure 9), not asserted here.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis_server import free_port

from loyaltylayer._errors import BudgetExhaustedError, ConfigurationError
from loyaltylayer._ratelimit import PROBE_FIRST, RateLimit, ServerBudget
from loyaltylayer.contrib.redis import RedisRateLimiter, RedisUnavailableError

ORIGIN = "https://api.loyaltylayer.test"
N = 10
PER = 0.5
HOLD = RateLimit(requests=N, per=PER).hold

Lease = tuple[float, float]  # Redis TIME just after the grant, just before the release


@pytest.fixture
async def make_limiter(redis_url: str) -> AsyncIterator[Any]:
    """Builds limiters on the test server (each its own connection, like separate workers)."""
    made: list[RedisRateLimiter] = []

    def make(**kwargs: Any) -> RedisRateLimiter:
        kwargs.setdefault("requests", N)
        kwargs.setdefault("per", PER)
        limiter = RedisRateLimiter.from_url(redis_url, **kwargs).bind(ORIGIN)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def redis_now(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1e6


async def use_leases(
    limiter: RedisRateLimiter,
    clock: aioredis.Redis,
    leases: list[Lease],
    *,
    max_latency: float = 0.01,
) -> None:
    """One caller that sends requests back to back, each taking up to ``max_latency``."""
    while True:
        async with limiter.lease(priority="batch"):
            granted = await redis_now(clock)
            await asyncio.sleep(random.uniform(0.0, max_latency))
            released = await redis_now(clock)
        leases.append((granted, released))


async def expiries(client: aioredis.Redis, key: str) -> list[float]:
    """The scores of a limiter's sorted set: when each member stops counting, in seconds."""
    members = cast(list[tuple[bytes, float]], await client.zrange(key, 0, -1, withscores=True))
    return [score / 1e6 for _, score in members]


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - the state changes in other tasks and processes
            await asyncio.sleep(0.005)


async def run_while(waiting: Awaitable[None], *callers: Any) -> None:
    """Run ``callers`` until ``waiting`` is done, then cancel them."""
    tasks = [asyncio.create_task(caller) for caller in callers]
    await waiting
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def max_counted(leases: list[Lease], per: float) -> int:
    """Most leases the server could count in one closed window of ``per`` seconds.

    A request may be counted anywhere between its grant and its release, so a window can
    catch it if it overlaps that interval.
    """
    return max(
        sum(1 for start, end in leases if start <= window <= end + per) for window, _ in leases
    )


def test_max_counted_catches_an_overlap() -> None:
    leases = [(0.0, 0.1), (0.55, 0.6)]
    assert max_counted(leases, 0.5) == 2
    assert max_counted(leases, 0.4) == 1


async def test_many_coroutines_keep_the_promise_and_share_the_turn(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    limiter = make_limiter()
    leases: list[Lease] = []
    await run_while(asyncio.sleep(3.0), *(use_leases(limiter, redis, leases) for _ in range(30)))

    assert max_counted(leases, PER) == N
    stats = limiter.stats
    assert stats.started == len(leases) + stats.in_flight
    # 30 waiting coroutines ask Redis about once per lease, not each one every time one frees.
    assert stats.polls <= 2 * stats.started + 10


def _skewed_worker(
    url: str, offset: float, callers: int, seconds: float, barrier: Any, results: Any
) -> None:
    """A worker process whose wall and monotonic clocks (and so its event loop) are off."""
    real_time, real_monotonic = time.time, time.monotonic
    time.time = lambda: real_time() + offset
    time.monotonic = lambda: real_monotonic() + offset

    async def main() -> list[Lease]:
        limiter = RedisRateLimiter.from_url(url, requests=N, per=PER).bind(ORIGIN)
        clock = aioredis.Redis.from_url(url)
        await limiter.check()
        await asyncio.to_thread(barrier.wait, 20)
        leases: list[Lease] = []
        leasing = (use_leases(limiter, clock, leases) for _ in range(callers))
        await run_while(asyncio.sleep(seconds), *leasing)
        await limiter.aclose()
        await clock.aclose()
        return leases

    results.put(asyncio.run(main()))


async def test_processes_with_skewed_clocks_share_one_budget(
    redis_url: str, redis: aioredis.Redis
) -> None:
    ctx = multiprocessing.get_context("spawn")
    offsets = (-30.0, 0.0, 30.0)
    barrier, results = ctx.Barrier(len(offsets)), ctx.Queue()
    workers = [
        ctx.Process(target=_skewed_worker, args=(redis_url, offset, 6, 3.0, barrier, results))
        for offset in offsets
    ]
    for worker in workers:
        worker.start()
    per_worker = [await asyncio.to_thread(results.get, timeout=20) for _ in workers]
    for worker in workers:
        await asyncio.to_thread(worker.join, 5)
        assert worker.exitcode == 0

    leases = [lease for worker_leases in per_worker for lease in worker_leases]
    assert all(worker_leases for worker_leases in per_worker)
    assert max_counted(leases, PER) == N


async def test_a_block_from_one_worker_pauses_the_others(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    blocker, other = make_limiter(), make_limiter()
    before = await redis_now(redis)
    await blocker.block(0.6)
    await blocker.block(0.1)  # shorter: must not shorten the first

    left = await other.blocked_for()
    asked = await redis_now(redis)
    assert before + 0.6 - asked <= left <= 0.6 + HOLD - PER  # one margin more than the server said
    leases: list[Lease] = []
    callers = (use_leases(other, redis, leases) for _ in range(3))
    await run_while(eventually(lambda: bool(leases)), *callers)
    assert min(start for start, _ in leases) >= before + 0.6
    assert await blocker.blocked_for() == 0.0


async def test_block_rejects_negative_and_ignores_zero(make_limiter: Any) -> None:
    limiter = make_limiter()
    with pytest.raises(ValueError, match="non-negative"):
        await limiter.block(-1.0)
    await limiter.block(0.0)
    assert await limiter.blocked_for() == 0.0


PRIORITY_KEY = f"{{loyaltylayer:{ORIGIN}:443:default}}:priority"


async def busy_batch(limiter: RedisRateLimiter, clock: aioredis.Redis) -> Any:
    """Two leases: one held by a long request, one cycled by three callers; returns at once
    after both were taken, so the cycled one frees in about one hold."""
    normal: list[Lease] = []

    async def long_request() -> None:
        async with limiter.lease(priority="batch"):
            await asyncio.sleep(3.0)

    tasks = [asyncio.create_task(long_request())]
    tasks += [asyncio.create_task(use_leases(limiter, clock, normal)) for _ in range(3)]
    await eventually(lambda: limiter.stats.started >= 2)
    return tasks, normal


async def test_priority_takes_the_next_free_lease_before_queued_calls(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    batch, token = make_limiter(requests=2), make_limiter(requests=2)
    tasks, normal = await busy_batch(batch, redis)
    asked = await redis_now(redis)
    async with token.lease(priority="token"):
        granted = await redis_now(redis)
    assert granted >= normal[0][1] + HOLD  # the cycled lease, once it had counted for a hold
    assert all(start > granted for start, _ in normal if start > asked)
    assert await redis.exists(PRIORITY_KEY) == 0

    # With no priority request waiting, normal calls get the second lease back.
    await eventually(lambda: any(start > granted for start, _ in normal))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_vanished_priority_waiter_holds_back_normal_calls_only_briefly(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    batch, token = make_limiter(requests=2), make_limiter(requests=2)
    tasks, normal = await busy_batch(batch, redis)
    asked = await redis_now(redis)

    async def fetch_token() -> None:
        async with token.lease(priority="token"):
            pass

    waiter = asyncio.create_task(fetch_token())
    async with asyncio.timeout(5.0):
        while not await redis.exists(PRIORITY_KEY):  # noqa: ASYNC110 - its claim is in Redis
            await asyncio.sleep(0.005)
    waiter.cancel()
    [claim_ends] = await expiries(redis, PRIORITY_KEY)
    # Its last poll's claim: the time to its next poll (at most a hold) and the grace after it.
    assert asked + HOLD < claim_ends <= await redis_now(redis) + HOLD + 1.0

    await eventually(lambda: any(start > asked for start, _ in normal))
    first_after = min(start for start, _ in normal if start > asked)
    assert claim_ends <= first_after <= claim_ends + HOLD  # at most one batch poll later
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _die_holding_a_lease(url: str, request_timeout: float) -> None:
    async def main() -> None:
        limiter = RedisRateLimiter.from_url(
            url, requests=1, per=0.2, request_timeout=request_timeout
        ).bind(ORIGIN)
        async with limiter.lease():
            os._exit(0)

    asyncio.run(main())


async def test_a_dead_workers_lease_expires_by_itself(
    redis_url: str, make_limiter: Any, redis: aioredis.Redis
) -> None:
    request_timeout = 0.3
    before = await redis_now(redis)
    dead = multiprocessing.get_context("spawn").Process(
        target=_die_holding_a_lease, args=(redis_url, request_timeout)
    )
    dead.start()
    await asyncio.to_thread(dead.join, 20)
    assert dead.exitcode == 0
    leases_key = f"{{loyaltylayer:{ORIGIN}:443:default}}:leases"
    [expires] = await expiries(redis, leases_key)
    ttl = RateLimit(requests=1, per=0.2).hold + request_timeout
    assert expires >= before + ttl

    survivor = make_limiter(requests=1, per=0.2, request_timeout=request_timeout)
    async with survivor.lease():
        granted = await redis_now(redis)
    assert expires <= granted <= expires + HOLD  # by itself, soon after it expired


async def test_a_request_that_outlives_its_lease_still_counts_after_it_ends(
    make_limiter: Any, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    slow, other = (make_limiter(requests=1, per=0.2, request_timeout=0.05) for _ in range(2))
    async with slow.lease():
        await asyncio.sleep(0.4)  # past hold + request_timeout: the lease expired meanwhile
        released = await redis_now(redis)
    assert slow.stats.overran == 1
    assert "outlived its lease" in caplog.text
    async with other.lease():
        granted = await redis_now(redis)
    assert granted >= released + RateLimit(requests=1, per=0.2).hold


async def test_keys_name_the_host_and_egress_and_are_not_left_behind(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    limiter = make_limiter(requests=2, per=0.2, egress_id="nat-a")
    assert limiter.bind(ORIGIN + ":443/v1/") is limiter
    with pytest.raises(ConfigurationError, match=r"paces https://api\.loyaltylayer\.test:443"):
        limiter.bind("https://other.test")
    async with limiter.lease():
        pass
    key = f"{{loyaltylayer:{ORIGIN}:443:nat-a}}:leases"
    assert await redis.zcard(key) == 1
    assert 0 < await redis.pttl(key) <= 1000 * (0.2 + 0.2 / 60) + 2
    await asyncio.sleep(0.25)
    assert await redis.exists(key) == 0


async def test_unbound_limiter_says_what_to_call(redis_url: str) -> None:
    limiter = RedisRateLimiter.from_url(redis_url)
    with pytest.raises(ConfigurationError, match=r"bind\(origin\)"):
        async with limiter.lease():
            pass
    await limiter.aclose()


async def test_unreachable_redis_fails_clearly_without_the_password() -> None:
    port = free_port()
    limiter = RedisRateLimiter.from_url(f"redis://ops:s3cr3t-pw@127.0.0.1:{port}/2").bind(ORIGIN)
    with pytest.raises(RedisUnavailableError) as check_error:
        await limiter.check()
    with pytest.raises(RedisUnavailableError) as lease_error:
        async with limiter.lease():
            pass
    for error in (check_error.value, lease_error.value):
        assert error.retryable  # it never reached the API: the same request may go through
        assert f"redis://127.0.0.1:{port}/2" in str(error)
        assert "s3cr3t" not in str(error)
        assert "s3cr3t" not in repr(error.__cause__)
    await limiter.aclose()


@pytest.mark.parametrize(
    "url",
    ["memcached://127.0.0.1:11211", "redis://ops:s3cr3t-pw", "redis://127.0.0.1:s3cr3t-pw/0"],
)
def test_a_url_redis_cannot_read_is_a_configuration_error_that_does_not_repeat_it(
    url: str,
) -> None:
    with pytest.raises(ConfigurationError) as error:
        RedisRateLimiter.from_url(url)
    assert str(error.value) == (
        "the Redis URL is not valid (it is not shown: it may hold a password); expected "
        "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
    )
    assert error.value.__cause__ is None
    assert error.value.__suppress_context__


async def test_unreachable_redis_falls_back_to_a_share_of_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigurationError, match="expected_workers"):
        RedisRateLimiter.from_url(url, on_unavailable="local")
    limiter = RedisRateLimiter.from_url(
        url, requests=8, per=0.5, on_unavailable="local", expected_workers=4
    ).bind(ORIGIN)
    with caplog.at_level(logging.WARNING):
        await limiter.check()
    assert limiter.stats.local
    assert "2 requests per 0.5 s" in caplog.text
    assert "s3cr3t" not in caplog.text

    for _ in range(2):
        async with limiter.lease():
            pass
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3), limiter.lease():
            pass
    await limiter.aclose()


# -- one budget, many users ------------------------------------------------------------------

INTERACTIVE_KEY = f"{{loyaltylayer:{ORIGIN}:443:default}}:interactive"
ADAPTIVE_KEY = f"{{loyaltylayer:{ORIGIN}:443:default}}:adaptive"


async def test_an_interactive_call_in_another_process_goes_ahead_of_queued_batch_calls(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    batch, web = make_limiter(requests=2), make_limiter(requests=2)
    tasks, normal = await busy_batch(batch, redis)
    try:
        asked = await redis_now(redis)
        async with web.lease(priority="interactive"):
            granted = await redis_now(redis)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # It waited for the next free lease (one hold, not one per batch call queued), and no batch
    # call took that one first.
    assert granted - asked < 2 * HOLD
    assert all(start > granted for start, _ in normal if start > asked)
    assert await redis.exists(INTERACTIVE_KEY) == 0


async def test_the_reserve_is_for_interactive_calls_only(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    batch = make_limiter(requests=3, reserve=1)
    web = make_limiter(requests=3, reserve=1)
    for _ in range(2):
        async with batch.lease(priority="batch"):
            pass
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1), batch.lease(priority="batch"):
            pass
    started, polls = web.stats.started, web.stats.polls
    async with web.lease(priority="interactive"):
        pass
    assert (web.stats.started, web.stats.polls) == (started + 1, polls + 1)  # at once, no wait


async def test_a_wait_longer_than_allowed_fails_at_once_with_nothing_taken(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    limiter = make_limiter(requests=2)
    for _ in range(2):
        async with limiter.lease(priority="batch"):
            pass
    polls, started = limiter.stats.polls, limiter.stats.started
    with pytest.raises(BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=0.1):
            pytest.fail("no lease can come in time")
    assert limiter.stats.polls == polls + 1  # one look at Redis, no wait
    assert limiter.stats.started == started
    assert info.value.retry_after is not None
    assert 0.1 < info.value.retry_after <= HOLD
    assert await redis.exists(INTERACTIVE_KEY) == 0  # its claim went with it
    # Long enough: it waits for the lease.
    async with limiter.lease(max_wait=HOLD + 0.1):
        pass
    # During a block that outlasts the wait, too.
    before = await redis_now(redis)
    await limiter.block(5.0)
    with pytest.raises(BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=1.0):
            pass
    blocked_for = limiter.stats.blocked_for
    waited = await redis_now(redis) - before
    assert 5.0 - waited <= info.value.retry_after <= 5.0 + HOLD - PER
    assert 5.0 - waited <= blocked_for <= 5.0 + HOLD - PER


async def test_the_learned_limit_is_shared_and_recovers(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    per = 0.5
    hold = RateLimit(requests=4, per=per).hold
    seen, other = make_limiter(requests=4, per=per), make_limiter(requests=4, per=per)
    for _ in range(4):
        async with seen.lease(priority="batch"):
            pass
    await seen.block(0.05)  # the server allowed 3 of our 4
    await seen.block(0.05)  # the same block, seen again: no new evidence
    assert await redis.hget(ADAPTIVE_KEY, "limit") == b"3"
    await asyncio.sleep(hold + 0.06)  # every lease free, the block over
    for _ in range(3):
        async with other.lease(priority="batch"):
            pass
    assert other.stats.limit == 3  # the other worker keeps to what the first one learned
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), other.lease(priority="batch"):
            pass
    # One lease more after PROBE_FIRST windows without a 429, then the full budget again.
    await asyncio.sleep(PROBE_FIRST * hold)
    async with other.lease(priority="batch"):
        pass
    assert other.stats.limit == 4


async def test_adaptive_off_keeps_the_configured_limit(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    limiter = make_limiter(requests=4, adaptive=False)
    for _ in range(4):
        async with limiter.lease(priority="batch"):
            pass
    await limiter.block(0.05)
    await limiter.observe(ServerBudget(remaining=0, reset=5.0))
    assert await redis.exists(ADAPTIVE_KEY) == 0
    assert await limiter.blocked_for() <= 0.05


async def test_rate_limit_headers_lower_the_shared_limit_and_pause(
    make_limiter: Any, redis: aioredis.Redis
) -> None:
    limiter = make_limiter(requests=10)
    async with limiter.lease(priority="batch"):
        await limiter.observe(ServerBudget(limit=100, remaining=50))
        assert await redis.exists(ADAPTIVE_KEY) == 0
        await limiter.observe(ServerBudget(remaining=4))
    assert await redis.hget(ADAPTIVE_KEY, "limit") == b"5"  # 1 held + 4 remaining
    await limiter.observe(ServerBudget(limit=3))
    assert await redis.hget(ADAPTIVE_KEY, "limit") == b"3"
    before = await redis_now(redis)
    await limiter.observe(ServerBudget(remaining=0, reset=2.0))
    left = await limiter.blocked_for()
    assert 2.0 - (await redis_now(redis) - before) <= left <= 2.0 + HOLD - PER
