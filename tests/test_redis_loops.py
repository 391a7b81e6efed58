"""The Redis backends across event loops: each loop its own connections, closed with the loop.

A module-level limiter or token cache lives longer than any loop that uses it (one
``asyncio.run()`` after another, a Celery task per loop); its Redis connections do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis_server import connections, connections_once_closed

import loyaltylayer as ll

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://api.loyaltylayer.example"


@pytest.fixture
def server(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test server, on an emptied database, to watch its connections."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


NAME = "loyaltylayer-test-loops"
"""The ``client_name`` of the backends' connections."""


def test_backends_from_a_url_connect_on_each_loop_and_close_with_it(
    redis_url: str, server: redis.Redis
) -> None:
    named = f"{redis_url}?client_name={NAME}"
    limiter = ll.RedisRateLimiter.from_url(named).bind(ORIGIN)
    cache = ll.RedisTokenCache.from_url(named)

    async def use(run: int) -> tuple[str | None, int]:
        async with limiter.lease():
            await cache.set("key", f"token-{run}", 60.0)
        return await cache.get("key"), connections(server, NAME)

    seen = []
    for run in range(3):
        seen.append(asyncio.run(use(run)))
        assert connections_once_closed(server, NAME) == 0  # each loop closed its own at shutdown
    assert seen == [(f"token-{run}", 2) for run in range(3)]
    assert limiter.stats.started == 3

    async def close() -> None:
        await limiter.aclose()
        await cache.aclose()

    asyncio.run(close())
    assert connections_once_closed(server, NAME) == 0


def test_a_client_given_serves_its_first_loop_and_says_what_to_do_on_another(
    redis_url: str, server: redis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    limiter = ll.RedisRateLimiter(client, ll.RateLimit()).bind(ORIGIN)
    cache = ll.RedisTokenCache(client)

    async def use_then_close() -> str | None:
        try:
            async with limiter.lease():
                await cache.set("key", "token", 60.0)
            return await cache.get("key")
        finally:
            await client.aclose()  # the user's client: the user closes it

    assert asyncio.run(use_then_close()) == "token"
    for call, name in (
        (limiter.blocked_for, "RedisRateLimiter"),
        (lambda: cache.get("key"), "RedisTokenCache"),
    ):
        with pytest.raises(ll.EventLoopError) as info:
            asyncio.run(call())
        assert str(info.value) == (
            f"the Redis client given to this {name} belongs to the event loop and process that "
            f"first used it, and it is now used on another one: make the {name} with "
            "from_url(), which connects anew in each process and loop"
        )


def test_a_client_given_is_used_again_after_close_on_its_own_loop(redis_url: str) -> None:
    async def use() -> float:
        client = aioredis.Redis.from_url(redis_url)
        limiter = ll.RedisRateLimiter(client, ll.RateLimit()).bind(ORIGIN)
        async with limiter.lease():
            pass
        await limiter.aclose()  # not its client to close: closes nothing
        async with limiter.lease():
            pass
        await client.aclose()
        return limiter.stats.started

    assert asyncio.run(use()) == 2
