"""A server-sent wait is honoured up to 15 minutes, never the 32 years ``retry_after: 1e9`` asks
for: in the transport (body or header), in every limiter, and in the Redis limiter every process
shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from network_servers import serving
from sdk_env import CLIENT_ID, CLIENT_SECRET, holder, running

import loyaltylayer as ll
from loyaltylayer._ratelimit import LeaseLimiter, Limiter, UnlimitedLimiter
from loyaltylayer._retry_after import MAX_RETRY_AFTER
from loyaltylayer._transport import _retry_after
from loyaltylayer.contrib.redis import RedisRateLimiter
from loyaltylayer.sandbox import Fault

HUGE = {
    "error": "rate_limit_exceeded",
    "error_description": "Retry after 1e9 seconds",
    "code": 429,
    "retry_after": 1e9,
}


def test_the_cap_is_fifteen_minutes() -> None:
    assert MAX_RETRY_AFTER == 900.0


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        ({}, {"retry_after": 1e9}, 900.0),
        ({}, {"retry_after": 10**400}, 900.0),
        ({}, {"retry_after": float("inf")}, 900.0),
        ({"Retry-After": "1000000000"}, {}, 900.0),
        ({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, {}, 900.0),
        ({"Retry-After": "61"}, {"retry_after": 60}, 61.0),
        ({}, {"retry_after": 899.2}, 900.0),
        ({}, {}, 60.0),
    ],
)
def test_retry_after_is_capped_from_body_or_header(
    headers: dict[str, str], body: dict[str, Any], wait: float
) -> None:
    assert _retry_after(headers, body) == wait


@pytest.mark.looptime
async def test_retry_after_1e9_waits_15_minutes_then_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="loyaltylayer")
    async with running(deadline=None, max_retries=1) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="status", status=429, body=HUGE))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ll.RateLimitError) as excinfo:
            await client.passes.status(created.pass_id)
        assert loop.time() - started == pytest.approx(900.0, abs=1.0)  # virtual time
        assert excinfo.value.retry_after == 900.0
        assert excinfo.value.attempts == 2
    assert "more than the 60 s the API documents: waiting 900 s" in caplog.text


@pytest.mark.looptime
async def test_a_429_whose_wait_passes_the_deadline_fails_at_once() -> None:
    async with running(deadline=300.0, max_retries=4) as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="status", status=429, body=HUGE))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ll.RateLimitError) as excinfo:
            await client.passes.status("pss_1")
        assert loop.time() - started < 1.0  # no sleep towards a wait that ends past the deadline
        assert excinfo.value.retry_after == 900.0
        assert excinfo.value.attempts == 1
        # Every call of the client is paused, for 15 minutes (and the adaptive limiter's one-second
        # margin), not 32 years.
        assert 900.0 < await client.limiter.blocked_for() <= 901.0


async def test_a_retry_after_header_of_1e9_is_capped_too() -> None:
    async def api(request: web.Request) -> web.Response:
        if request.path == "/auth/token":
            return web.json_response({"access_token": "tok", "expires_in": 3600})
        body = {"error": "rate_limit_exceeded", "error_description": "later", "code": 429}
        return web.json_response(body, status=429, headers={"Retry-After": "1000000000"})

    async with (
        serving(api) as url,
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, max_retries=0) as client,
    ):
        with pytest.raises(ll.RateLimitError) as excinfo:
            await client.passes.status("pss_1")
        assert 900.0 < await client.limiter.blocked_for() <= 901.0  # the cap and one margin
    assert excinfo.value.retry_after == 900.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: LeaseLimiter(ll.RateLimit(adaptive=False)),
        lambda: LeaseLimiter(ll.RateLimit()),
        UnlimitedLimiter,
    ],
)
async def test_every_in_process_limiter_caps_a_block_asked_for_directly(
    make: Callable[[], Limiter],
) -> None:
    limiter = make()
    await limiter.block(1e9)
    # 15 minutes, and the adaptive limiter's one-second margin: never 32 years.
    assert 899.0 < await limiter.blocked_for() <= 901.0


async def test_the_redis_limiter_caps_a_block_for_the_whole_fleet(
    redis: aioredis.Redis, redis_url: str
) -> None:
    limiter = RedisRateLimiter.from_url(redis_url).bind("https://api.example.com")
    other_process = RedisRateLimiter.from_url(redis_url).bind("https://api.example.com")
    try:
        await limiter.block(1e9)
        assert 900.0 < await other_process.blocked_for() <= 901.0  # the cap and one margin
        key = "{loyaltylayer:https://api.example.com:443:default}:blocked"
        assert 900_000 < await redis.pttl(key) <= 901_000
    finally:
        await limiter.aclose()
        await other_process.aclose()
