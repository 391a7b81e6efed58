"""The client wired to Redis: a shared limiter from the environment, a shared token."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis_server import connections, connections_once_closed, free_port
from sdk_env import CLIENT_ID, CLIENT_SECRET, cardholder_rows, holder, paths

import loyaltylayer as ll
from loyaltylayer.contrib.redis import RedisUnavailableError
from loyaltylayer.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.timeout(60)


async def test_from_env_paces_through_redis_and_closes_its_limiter(
    redis_url: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Sandbox(SandboxConfig(rate_key="off")) as sandbox:
        monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", CLIENT_SECRET)
        monkeypatch.setenv("LOYALTYLAYER_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("LOYALTYLAYER_REDIS_URL", redis_url)
        client = ll.AsyncLoyaltyLayer.from_env()
        assert isinstance(client.limiter, ll.RedisRateLimiter)
        async with client:
            created = await client.passes.create(plan_id="esim-5gb", holder=holder())
            await asyncio.gather(*(client.passes.status(created.pass_id) for _ in range(10)))
            connected = (await redis.info("clients"))["connected_clients"]
            assert connected >= 2
            origin = sandbox.base_url.replace("localhost", "127.0.0.1")
            leases = await redis.zcard(f"{{loyaltylayer:{origin}:default}}:leases")
            assert leases == 12
        assert Counter(e.status for e in sandbox.journal()) == {200: 12}
        assert (await redis.info("clients"))["connected_clients"] < connected


HANDED_OVER = "loyaltylayer-test-handed-over"
"""The ``client_name`` of the connections of the limiter handed to the client."""


@pytest.mark.parametrize("close_limiter", [False, True])
async def test_a_limiter_given_is_closed_with_the_client_only_when_handed_over(
    redis_url: str, redis: aioredis.Redis, close_limiter: bool
) -> None:
    server = sync_redis.Redis.from_url(redis_url)
    async with Sandbox(SandboxConfig(rate_key="off")) as sandbox:
        limiter = ll.RedisRateLimiter.from_url(f"{redis_url}?client_name={HANDED_OVER}")
        async with ll.AsyncLoyaltyLayer(
            CLIENT_ID,
            CLIENT_SECRET,
            sandbox.base_url,
            rate_limit=limiter,
            close_limiter=close_limiter,
        ) as client:
            await client.passes.create(plan_id="esim-5gb", holder=holder())
            assert connections(server, HANDED_OVER) == 1
        if close_limiter:
            assert connections_once_closed(server, HANDED_OVER) == 0
        else:
            assert connections(server, HANDED_OVER) == 1
        if not close_limiter:
            async with ll.AsyncLoyaltyLayer(
                CLIENT_ID, CLIENT_SECRET, sandbox.base_url, rate_limit=limiter
            ) as again:
                await again.passes.create(plan_id="esim-5gb", holder=holder())
            await limiter.aclose()
        assert Counter(e.status for e in sandbox.journal()) == {200: 2 if close_limiter else 4}
    server.close()


async def test_workers_share_one_token_through_redis(redis_url: str) -> None:
    async with Sandbox(SandboxConfig(rate_key="off")) as sandbox:
        caches = [ll.RedisTokenCache.from_url(redis_url) for _ in range(3)]
        clients = [
            ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox.base_url, token_cache=cache)
            for cache in caches
        ]
        for client in clients:
            await client.passes.create(plan_id="esim-5gb", holder=holder())
        assert len(paths(sandbox.journal(), "/auth/token")) == 1
        for client, cache in zip(clients, caches, strict=True):
            await client.close()
            await cache.aclose()


async def test_records_failed_by_a_redis_outage_are_retryable_and_a_rerun_creates_them(
    redis_url: str,
) -> None:
    rows = cardholder_rows(3)
    checkpoint = ll.MemoryCheckpoint()
    async with Sandbox(SandboxConfig(rate_key="off")) as sandbox:
        nobody = ll.RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
        async with ll.AsyncLoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, sandbox.base_url, rate_limit=nobody, close_limiter=True
        ) as client:
            down = [o async for o in client.enroll(rows, plan_id="pp-gold", checkpoint=checkpoint)]
        assert sorted((o.key, o.status, o.retryable) for o in down) == [
            ("R0", "failed", True),
            ("R1", "failed", True),
            ("R2", "failed", True),
        ]
        assert all(isinstance(o.error, RedisUnavailableError) for o in down)
        assert [checkpoint.progress_of(o.key) for o in down] == [
            ll.EnrollProgress(key=o.key, step="tokenize", idempotency_key=o.idempotency_key)
            for o in down
        ]
        assert sandbox.journal() == []

        async with ll.AsyncLoyaltyLayer(
            CLIENT_ID,
            CLIENT_SECRET,
            sandbox.base_url,
            rate_limit=ll.RedisRateLimiter.from_url(redis_url),
            close_limiter=True,
        ) as client:
            back = [o async for o in client.enroll(rows, plan_id="pp-gold", checkpoint=checkpoint)]
        assert sorted((o.key, o.status) for o in back) == [
            ("R0", "created"),
            ("R1", "created"),
            ("R2", "created"),
        ]
        assert len(sandbox.passes()) == 3
