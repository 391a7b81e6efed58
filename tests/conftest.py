"""Fixtures shared by several test modules: a real redis-server on loopback, a sandbox process
for real hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import hypothesis
import pytest
import redis.asyncio as aioredis
from hosts import create_pass
from redis_server import redis_url_or_skip
from sandbox_process import SandboxProcess

# No per-example deadline: on a shared machine a pause of the process is not a slow example.
hypothesis.settings.register_profile("loyaltylayer", deadline=None)
hypothesis.settings.load_profile("loyaltylayer")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the session (skipped loudly when the binary is missing)."""
    yield from redis_url_or_skip()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on an emptied database."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def host_sandbox() -> Iterator[tuple[str, str]]:
    """A sandbox process without a rate limit, for hosts to call: its URL and a pass in it."""
    process = SandboxProcess("--rate-key", "off")
    yield process.url, create_pass(process.url)
    process.close()
