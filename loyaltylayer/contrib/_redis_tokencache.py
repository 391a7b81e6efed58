"""Access tokens shared through Redis, so N workers with one client_id fetch one token, not N.

Lifetimes are Redis key TTLs (``SET ... PX``), counted on the Redis clock, so a worker whose
clock is off never serves a token the others consider expired. Tokens are secrets: nothing here
logs them or puts them in an error message. Anyone who can read the Redis can use them, so
protect it like the client secret (ACL, TLS with ``rediss://``).
"""

from __future__ import annotations

import math
from typing import Any, Self

import redis.asyncio as aioredis

from .._tokencache import TokenCache
from ._redis_connection import UNAVAILABLE, RedisClients, RedisUnavailableError, open_client

__all__ = ["RedisTokenCache"]

# Compare-and-delete: a worker that saw its token rejected must not delete the fresh token
# another worker stored meanwhile.
_DISCARD_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisTokenCache(TokenCache):
    """A :class:`~loyaltylayer.TokenCache` in Redis, under keys ``<prefix><key>``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "loyaltylayer:token:",
        close_client: bool = False,
    ) -> None:
        self._redis = RedisClients(client, owner=type(self).__name__, close_client=close_client)
        self._prefix = prefix
        self._server = self._redis.server
        self._discard_script = client.register_script(_DISCARD_IF_SAME)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "loyaltylayer:token:") -> Self:
        """A cache on the Redis at ``url``, which it owns, opens in each process and event loop
        that uses it, and closes in :meth:`aclose`."""
        cache = cls(open_client(url), prefix=prefix, close_client=True)
        cache._redis.reconnect_to(url)
        return cache

    async def get(self, key: str) -> str | None:
        client = await self._redis.get()
        value = await self._run(client.get(self._prefix + key))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, key: str, token: str, ttl: float) -> None:
        """Keep ``token`` for ``ttl`` seconds; an already expired one (``ttl <= 0``) is not kept."""
        if ttl > 0:
            client = await self._redis.get()
            await self._run(client.set(self._prefix + key, token, px=math.ceil(ttl * 1000)))

    async def discard(self, key: str, token: str) -> None:
        client = await self._redis.get()
        await self._run(
            self._discard_script(keys=[self._prefix + key], args=[token], client=client)
        )

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, call: Any) -> Any:
        try:
            return await call
        except UNAVAILABLE as exc:
            raise RedisUnavailableError(self._server, exc) from exc
