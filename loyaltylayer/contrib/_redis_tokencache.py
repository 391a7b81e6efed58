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
from ._redis_connection import UNAVAILABLE, RedisUnavailableError, describe, open_client

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
        self._client = client
        self._prefix = prefix
        self._close_client = close_client
        self._server = describe(client)
        self._discard_script = client.register_script(_DISCARD_IF_SAME)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "loyaltylayer:token:") -> Self:
        """A cache on the Redis at ``url``, which it owns and closes in :meth:`aclose`."""
        return cls(open_client(url), prefix=prefix, close_client=True)

    async def get(self, key: str) -> str | None:
        value = await self._run(self._client.get(self._prefix + key))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, key: str, token: str, ttl: float) -> None:
        """Keep ``token`` for ``ttl`` seconds; an already expired one (``ttl <= 0``) is not kept."""
        if ttl > 0:
            await self._run(self._client.set(self._prefix + key, token, px=math.ceil(ttl * 1000)))

    async def discard(self, key: str, token: str) -> None:
        await self._run(self._discard_script(keys=[self._prefix + key], args=[token]))

    async def aclose(self) -> None:
        if self._close_client:
            await self._client.aclose()

    async def _run(self, call: Any) -> Any:
        try:
            return await call
        except UNAVAILABLE as exc:
            raise RedisUnavailableError(self._server, exc) from exc
