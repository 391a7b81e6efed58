"""One budget, many users: priorities, the reserve, bounded waits and the adaptive limit of the
in-process limiter, and what the client makes of them, in virtual time."""

from __future__ import annotations

import asyncio
import time

import pytest
from sdk_env import CLIENT_ID, CLIENT_SECRET, card, running

import loyaltylayer as ll
from loyaltylayer._ratelimit import (
    PROBE_FIRST,
    LeaseLimiter,
    LeasePriority,
    Limiter,
    RateLimit,
    ServerBudget,
    UnlimitedLimiter,
    server_budget,
)
from loyaltylayer.sandbox import SandboxConfig, SandboxThread

pytestmark = pytest.mark.timeout(30)


def now() -> float:
    return asyncio.get_running_loop().time()


async def fill(limiter: Limiter, leases: int) -> None:
    """Take and give back ``leases`` leases at once: each now cools for one hold."""
    for _ in range(leases):
        async with limiter.lease(priority="batch"):
            pass


async def take(limiter: Limiter, priority: LeasePriority) -> None:
    async with limiter.lease(priority=priority):
        pass


# -- RateLimit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reserve": -1}, "RateLimit.reserve must be a whole number, 0 or more"),
        ({"reserve": 1.5}, "RateLimit.reserve must be a whole number, 0 or more"),
        ({"reserve": True}, "RateLimit.reserve must be a whole number, 0 or more"),
        ({"reserve": 100}, "RateLimit.reserve must be less than RateLimit.requests"),
        ({"requests": 5, "reserve": 5}, "RateLimit.reserve must be less than RateLimit.requests"),
        ({"adaptive": 1}, "RateLimit.adaptive must be True or False"),
    ],
)
def test_rate_limit_refuses_a_bad_reserve_or_adaptive(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_defaults() -> None:
    limit = RateLimit()
    assert (limit.reserve, limit.adaptive) == (0, True)


# -- ordering and the reserve ----------------------------------------------------------------


@pytest.mark.looptime
async def test_token_then_interactive_then_batch_each_in_arrival_order() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=1.0))
    order: list[str] = []

    async def one(name: str, priority: LeasePriority) -> None:
        async with limiter.lease(priority=priority):
            order.append(name)

    async with limiter.lease():
        tasks = [asyncio.create_task(one(f"b{i}", "batch")) for i in range(3)]
        tasks += [asyncio.create_task(one(f"i{i}", "interactive")) for i in range(2)]
        tasks.append(asyncio.create_task(one("token", "token")))
        tasks.append(asyncio.create_task(one("b3", "batch")))
        await asyncio.sleep(0.1)
        assert limiter.stats.waiting == 7
    await asyncio.gather(*tasks)
    assert order == ["token", "i0", "i1", "b0", "b1", "b2", "b3"]


@pytest.mark.looptime
async def test_an_interactive_call_takes_the_next_free_lease_during_a_full_budget_job() -> None:
    limit = RateLimit(requests=10, per=1.0)
    limiter = LeaseLimiter(limit)
    served: list[float] = []

    async def batch_job() -> None:
        async def one() -> None:
            async with limiter.lease(priority="batch"):
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(200)))

    async def handler() -> None:
        for _ in range(20):
            await asyncio.sleep(0.25)
            asked = now()
            async with limiter.lease():
                served.append(now() - asked)

    await asyncio.gather(batch_job(), handler())
    # Never behind the queued batch: at most until the next lease frees, a hold after a reply.
    assert max(served) <= limit.hold
    assert limiter.stats.started == 220


@pytest.mark.looptime
async def test_the_reserve_is_for_interactive_calls_only() -> None:
    limiter = LeaseLimiter(RateLimit(requests=4, per=10.0, reserve=1))
    t0 = now()
    await fill(limiter, 3)
    assert now() == t0
    waiting = asyncio.create_task(fill(limiter, 1))
    await asyncio.sleep(1.0)
    assert limiter.stats.waiting == 1
    async with limiter.lease():  # the reserved lease: no wait at all
        assert now() == t0 + 1.0
    await waiting
    assert now() == pytest.approx(t0 + limiter.config.hold)
    assert limiter.stats.started == 5


@pytest.mark.looptime
async def test_without_a_reserve_a_lone_batch_job_uses_the_whole_budget() -> None:
    limiter = LeaseLimiter(RateLimit(requests=4, per=10.0))
    t0 = now()
    await fill(limiter, 4)
    assert now() == t0


# -- bounded waits -----------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_wait_longer_than_allowed_fails_at_once_with_the_estimate() -> None:
    limit = RateLimit(requests=2, per=10.0, margin=1.0)
    limiter = LeaseLimiter(limit)
    await fill(limiter, 1)
    await asyncio.sleep(3.0)
    await fill(limiter, 1)  # the leases free at 11 s and 14 s
    t0 = now()
    with pytest.raises(ll.BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=7.9):
            pytest.fail("no lease can come in time")
    assert now() == t0
    assert info.value.retry_after == pytest.approx(8.0)
    assert limiter.stats.waiting == 0
    # Behind another interactive waiter, it needs the second lease to free; a batch waiter
    # would not be ahead of it.
    batch = asyncio.create_task(fill(limiter, 1))
    first = asyncio.create_task(take(limiter, "interactive"))
    await asyncio.sleep(0)
    with pytest.raises(ll.BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=10.9):
            pass
    assert info.value.retry_after == pytest.approx(11.0)
    async with limiter.lease(max_wait=11.0):
        assert now() == pytest.approx(t0 + 11.0)
    await first
    assert not batch.done()
    batch.cancel()


@pytest.mark.looptime
async def test_a_wait_that_runs_over_fails_when_its_time_is_up() -> None:
    limiter = LeaseLimiter(RateLimit(requests=1, per=10.0, margin=1.0, adaptive=False))
    await fill(limiter, 1)
    t0 = now()

    async def block_later() -> None:
        await asyncio.sleep(5.0)
        await limiter.block(30.0)  # a 429 elsewhere: the estimate no longer holds

    blocker = asyncio.create_task(block_later())
    with pytest.raises(ll.BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=12.0):
            pass
    await blocker
    assert now() == pytest.approx(t0 + 12.0)
    assert info.value.retry_after == pytest.approx(23.0)
    assert limiter.stats.waiting == 0


@pytest.mark.looptime
@pytest.mark.parametrize("limiter", [LeaseLimiter(RateLimit(adaptive=False)), UnlimitedLimiter()])
async def test_a_block_longer_than_the_wait_allowed_fails_at_once(limiter: Limiter) -> None:
    await limiter.block(60.0)
    await asyncio.sleep(10.0)
    t0 = now()
    with pytest.raises(ll.BudgetExhaustedError) as info:
        async with limiter.lease(max_wait=49.0):
            pass
    assert (now(), info.value.retry_after) == (t0, pytest.approx(50.0))
    async with limiter.lease(max_wait=50.0):
        assert now() == pytest.approx(t0 + 50.0)


def test_budget_exhausted_is_a_rate_limit_error_that_names_the_wait() -> None:
    error = ll.BudgetExhaustedError(retry_after=2.5, method="POST", path="/v1/pass/status")
    assert isinstance(error, ll.RateLimitError)
    assert (error.status, error.error, error.retry_after) == (429, "budget_exhausted", 2.5)
    assert "expected in 2.5 s" in str(error)


# -- the adaptive limit ------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_429_lowers_the_limit_below_the_leases_held_then_it_probes_back_up() -> None:
    limit = RateLimit(requests=10, per=1.0)
    hold = limit.hold
    limiter = LeaseLimiter(limit)
    await fill(limiter, 8)
    t0 = now()
    await limiter.block(2.0)  # the server allowed 7 of the 8 (others share the IP)
    assert limiter.stats.limit == 7
    # One margin longer than the server said: our own requests it refused as the block began
    # leave its window first.
    assert await limiter.blocked_for() == pytest.approx(2.0 + hold - limit.per)
    await limiter.block(2.0)  # the same block, seen by another request: no new evidence
    assert limiter.stats.limit == 7
    # Probes: one lease more after PROBE_FIRST windows, then two, then four...
    await asyncio.sleep(2.0 + hold - limit.per + PROBE_FIRST * hold + 0.001 - (now() - t0))
    await fill(limiter, 0)
    assert limiter.stats.limit == 8
    await asyncio.sleep(PROBE_FIRST * hold)
    await fill(limiter, 0)
    assert limiter.stats.limit == 10


@pytest.mark.looptime
async def test_a_probe_that_ends_in_a_429_waits_twice_as_long_for_the_next() -> None:
    limit = RateLimit(requests=10, per=1.0)
    hold = limit.hold
    limiter = LeaseLimiter(limit)
    block = 1.0 + hold - limit.per  # one margin longer than the server's
    await fill(limiter, 8)
    await limiter.block(1.0)
    assert limiter.stats.limit == 7
    await asyncio.sleep(block + PROBE_FIRST * hold + 0.001)
    await fill(limiter, 8)  # the probe: 8 leases; the server allows 7 still
    assert limiter.stats.limit == 8
    await limiter.block(1.0)
    assert limiter.stats.limit == 7
    await asyncio.sleep(block + PROBE_FIRST * hold + 0.001)
    await fill(limiter, 0)
    assert limiter.stats.limit == 7  # not yet: twice the interval now
    await asyncio.sleep(PROBE_FIRST * hold)
    await fill(limiter, 0)
    assert limiter.stats.limit == 8


@pytest.mark.looptime
async def test_waiters_are_served_at_the_lower_limit() -> None:
    limiter = LeaseLimiter(RateLimit(requests=4, per=10.0, margin=1.0))
    await fill(limiter, 4)
    await limiter.block(1.0)
    assert limiter.stats.limit == 3
    t0 = now()
    await fill(limiter, 3)  # the 4 leases free at 11 s; only 3 may be taken
    assert now() == pytest.approx(t0 + 11.0)
    assert limiter.stats.held == 3


@pytest.mark.looptime
async def test_adaptive_off_keeps_the_configured_limit() -> None:
    limiter = LeaseLimiter(RateLimit(requests=10, per=1.0, adaptive=False))
    await fill(limiter, 8)
    await limiter.block(1.0)
    await limiter.observe(ServerBudget(limit=5, remaining=0, reset=30.0))
    assert limiter.stats.limit == 10
    assert await limiter.blocked_for() == pytest.approx(1.0)


@pytest.mark.looptime
async def test_rate_limit_headers_lower_the_limit_and_pause_when_none_remain() -> None:
    limiter = LeaseLimiter(RateLimit(requests=10, per=1.0))
    await fill(limiter, 4)
    await limiter.observe(ServerBudget(limit=100, remaining=20))
    assert limiter.stats.limit == 10  # more remain than leases are free: nothing learned
    await limiter.observe(ServerBudget(remaining=3))
    assert limiter.stats.limit == 7  # 4 held + 3 the server still allows
    await limiter.observe(ServerBudget(limit=5))
    assert limiter.stats.limit == 5
    await limiter.observe(ServerBudget(remaining=0, reset=30.0))
    assert await limiter.blocked_for() == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("headers", "budget"),
    [
        ({}, None),
        ({"Retry-After": "5"}, None),
        (
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "7", "RateLimit-Reset": "12"},
            ServerBudget(limit=100, remaining=7, reset=12.0),
        ),
        ({"X-RateLimit-Remaining": "0"}, ServerBudget(remaining=0)),
        ({"X-RateLimit-Limit": "60"}, ServerBudget(limit=60)),
        ({"RateLimit-Remaining": "-3", "RateLimit-Limit": "ten"}, None),
        ({"RateLimit-Limit": "9", "RateLimit-Reset": "soon"}, ServerBudget(limit=9)),
    ],
)
def test_server_budget_reads_the_standard_headers(
    headers: dict[str, str], budget: ServerBudget | None
) -> None:
    assert server_budget(headers) == budget


def test_server_budget_reads_an_epoch_reset_as_seconds_from_now() -> None:
    reset = int(time.time()) + 30
    budget = server_budget({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
    assert budget is not None
    assert budget.reset is not None
    assert 28.0 <= budget.reset <= 30.0


# -- the client ------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_an_interactive_call_that_cannot_get_a_lease_in_time_fails_at_once_unsent() -> None:
    config = SandboxConfig(seed=1, rate_limit=100, rate_window=60.0)
    rate = RateLimit(requests=5, per=60.0)
    async with running(config, rate_limit=rate, deadline=5.0) as (sandbox, client):
        created = await client.passes.create(
            plan_id="esim-5gb", holder=ll.Holder(first_name="A", last_name="B", email="a@b.co")
        )
        for _ in range(3):
            await client.passes.status(created.pass_id)
        sent = len(sandbox.journal())
        assert sent == 5  # the token, the create, three reads: the budget is used up
        t0 = now()
        with pytest.raises(ll.BudgetExhaustedError) as info:
            await client.passes.status(created.pass_id)
        assert now() - t0 <= 0.010
        assert len(sandbox.journal()) == sent
        error = info.value
        assert error.retry_after is not None
        assert error.retry_after > 5.0
        assert (error.method, error.path, error.attempts) == ("POST", "/v1/pass/status", 0)
        # It was no 429: nothing else is paused.
        assert await client.limiter.blocked_for() == 0.0


@pytest.mark.looptime
async def test_an_interactive_deadline_counts_the_queue_and_a_batch_one_does_not() -> None:
    config = SandboxConfig(seed=1, rate_key="off")
    rate = RateLimit(requests=2, per=10.0, margin=1.0)
    async with running(config, rate_limit=rate, deadline=5.0) as (_sandbox, client):
        await client.cards.encryption_keys()  # the token and the keys: the budget is used up
        t0 = now()
        with pytest.raises(ll.BudgetExhaustedError):
            await client.cards.encryption_keys()
        assert now() == t0
    async with running(config, rate_limit=rate, deadline=5.0, priority="batch") as (_, batch):
        await batch.cards.encryption_keys()
        await batch.cards.encryption_keys()  # waited for a lease, then had its 5 s
        assert now() - t0 == pytest.approx(11.0, abs=0.1)


@pytest.mark.looptime
async def test_batch_create_chunks_and_enroll_are_batch_calls() -> None:
    """While a job holds the queue, an interactive call takes the next free lease."""
    config = SandboxConfig(seed=1, rate_key="off")
    rate = RateLimit(requests=4, per=1.0)
    async with running(config, rate_limit=rate) as (_sandbox, client):
        records = [
            {
                "card_number": "4111111111111111",
                "card_expiry": "12/39",
                "name_on_card": "ADA LOVELACE",
                "cvv": "123",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": f"ada.{i}@example.com",
                "reference": f"R-{i}",
            }
            for i in range(40)
        ]
        served: list[float] = []

        async def job() -> int:
            created = 0
            async for outcome in client.enroll(records, plan_id="pp-gold", concurrency=8):
                created += outcome.status == "created"
            return created

        async def handler() -> None:
            await asyncio.sleep(2.0)  # the job has filled the queue by then
            for _ in range(4):
                asked = now()
                await client.cards.tokenize(card(), plan_id="pp-gold")
                served.append(now() - asked)

        created, _ = await asyncio.gather(job(), handler())
        assert created == 40
        assert max(served) <= rate.hold + 0.1


@pytest.mark.parametrize("priority", ["urgent", None, 1])
def test_the_client_refuses_an_unknown_priority(priority: object) -> None:
    with pytest.raises(ll.ValidationError, match="priority"):
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, "https://api.test", priority=priority)  # type: ignore[arg-type]


def test_the_limiter_and_its_stats_work_before_the_first_call() -> None:
    client = ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, "https://limiter-stats.test")
    stats = client.limiter.stats
    assert (stats.started, stats.waiting, stats.in_flight, stats.blocked_for) == (0, 0, 0, 0.0)
    assert stats.limit == 100


def test_sync_and_async_clients_of_one_process_share_one_budget() -> None:
    """An async client on one loop and a sync client on the portal's loop, at once: the
    sandbox never counts more than the limit in a window, and nothing gets a 429."""
    rate = RateLimit(requests=4, per=0.3)
    config = SandboxConfig(seed=1, rate_limit=4, rate_window=0.3, window_kind="sliding", block=5)
    with SandboxThread(config) as sandbox:
        sync_client = ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox.base_url, rate_limit=rate)
        keys_path = "/v1/card/encryption-keys"

        async def async_side() -> None:
            async with ll.AsyncLoyaltyLayer(
                CLIENT_ID, CLIENT_SECRET, sandbox.base_url, rate_limit=rate
            ) as client:
                assert client.limiter is sync_client.limiter
                calls = [asyncio.to_thread(sync_client.cards.encryption_keys) for _ in range(3)]
                calls += [client.cards.encryption_keys() for _ in range(3)]
                await asyncio.gather(*calls)

        with sync_client:
            asyncio.run(async_side())
        journal = sandbox.journal()
    assert [entry.status for entry in journal].count(429) == 0
    assert len([e for e in journal if e.path == keys_path]) == 6
    stamps = sorted(entry.time for entry in journal)
    assert max(sum(1 for t in stamps if s <= t < s + 0.3) for s in stamps) <= 4


def test_a_sync_call_with_a_short_deadline_under_a_full_budget_fails_at_once() -> None:
    rate = RateLimit(requests=2, per=60.0)
    with SandboxThread(SandboxConfig(seed=1, rate_key="off")) as sandbox:
        with ll.LoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, sandbox.base_url, rate_limit=rate, deadline=30.0
        ) as client:
            client.cards.encryption_keys()
            started = time.monotonic()
            with pytest.raises(ll.BudgetExhaustedError) as info:
                client.cards.encryption_keys()
            # At once, not at the deadline: half of it is far more than any scheduling delay.
            assert time.monotonic() - started < 15.0
        assert len(sandbox.journal()) == 2
    assert info.value.retry_after is not None
    assert info.value.retry_after > 30.0


@pytest.mark.looptime
async def test_batch_create_chunks_are_batch_calls() -> None:
    config = SandboxConfig(seed=1, rate_key="off")
    rate = RateLimit(requests=2, per=1.0)
    async with running(config, rate_limit=rate) as (sandbox, client):
        holder = ll.Holder(first_name="Ada", last_name="Lovelace", email="ada@example.com")
        created = await client.passes.create(plan_id="esim-5gb", holder=holder)
        requests = [ll.PassRequest(plan_id="esim-5gb", holder=holder) for _ in range(500)]
        chunks = asyncio.create_task(client.passes.batch_create(requests))
        await asyncio.sleep(0.1)  # the first chunks have the leases; the rest queue
        asked = now()
        await client.passes.status(created.pass_id)
        assert now() - asked <= rate.hold
        assert not chunks.done()
        result = await chunks
    assert len(result.items) == 500
    order = [e.path for e in sandbox.journal()]
    # The read went ahead of the chunks still queued: at most the two that had the leases.
    assert order.index("/v1/pass/status") <= order.index("/v1/pass/create") + 3
