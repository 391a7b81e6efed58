"""RedisTokenCache against a real redis-server: TTL on the Redis clock, compare-and-delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis_server import free_port

from loyaltylayer.contrib.redis import RedisTokenCache, RedisUnavailableError

KEY = "https://auth.loyaltylayer.test/oauth/token client-1"


@pytest.fixture
async def caches(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[list[RedisTokenCache]]:
    """Two caches on one Redis, as two workers would have."""
    made = [RedisTokenCache.from_url(redis_url) for _ in range(2)]
    yield made
    for cache in made:
        await cache.aclose()


async def test_a_token_set_by_one_worker_is_read_by_another(
    caches: list[RedisTokenCache], redis: aioredis.Redis
) -> None:
    first, second = caches
    assert await second.get(KEY) is None
    await first.set(KEY, "tok-1", 30.0)
    assert await second.get(KEY) == "tok-1"
    assert 25_000 < await redis.pttl(f"loyaltylayer:token:{KEY}") <= 30_000


async def test_a_token_expires_on_the_redis_clock(caches: list[RedisTokenCache]) -> None:
    first, second = caches
    assert await second.get(KEY) is None  # connected before the clock starts
    await first.set(KEY, "tok-1", 0.5)
    assert await second.get(KEY) == "tok-1"
    await asyncio.sleep(0.55)
    assert await second.get(KEY) is None


async def test_an_already_expired_token_is_not_kept(caches: list[RedisTokenCache]) -> None:
    first, _ = caches
    await first.set(KEY, "tok-1", 30.0)
    await first.set(KEY, "tok-2", 0.0)
    assert await first.get(KEY) == "tok-1"


async def test_discard_deletes_only_the_token_that_was_rejected(
    caches: list[RedisTokenCache],
) -> None:
    first, second = caches
    await first.set(KEY, "stale", 30.0)
    await second.set(KEY, "fresh", 30.0)  # another worker refreshed meanwhile
    await first.discard(KEY, "stale")
    assert await first.get(KEY) == "fresh"
    await second.discard(KEY, "fresh")
    assert await first.get(KEY) is None


async def test_keys_of_different_clients_do_not_mix(caches: list[RedisTokenCache]) -> None:
    first, _ = caches
    await first.set(KEY, "tok-1", 30.0)
    assert await first.get(KEY.replace("client-1", "client-2")) is None


async def test_unreachable_redis_names_the_server_not_the_password() -> None:
    port = free_port()
    cache = RedisTokenCache.from_url(f"redis://:s3cr3t-pw@127.0.0.1:{port}/0")
    with pytest.raises(RedisUnavailableError, match=f"redis://127.0.0.1:{port}/0") as error:
        await cache.get(KEY)
    assert "s3cr3t" not in str(error.value)
    await cache.aclose()
