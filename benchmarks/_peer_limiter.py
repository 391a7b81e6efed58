"""aiolimiter's ``AsyncLimiter`` dressed as a :class:`loyaltylayer.Limiter`, for figure 2.

It is given the same fair treatment as our limiter: every attempt (token, key fetch, retries)
goes through it, and a server 429 pauses every request until the block ends. Only the pacing
differs: aiolimiter stamps each request when it is sent (a leaky bucket that starts empty).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiolimiter import AsyncLimiter

from loyaltylayer import Limiter
from loyaltylayer._ratelimit import LeasePriority

__all__ = ["AiolimiterLimiter"]


class AiolimiterLimiter(Limiter):
    """``AsyncLimiter(requests, per)`` plus a shared "blocked until" barrier; counts blocks."""

    def __init__(self, requests: int, per: float) -> None:
        self._bucket = AsyncLimiter(requests, per)
        self._blocked_until = 0.0
        self.blocks = 0

    @contextlib.asynccontextmanager
    async def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        while (left := self._blocked_until - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        await self._bucket.acquire()
        yield

    async def block(self, seconds: float) -> None:
        self.blocks += 1
        until = asyncio.get_running_loop().time() + seconds
        self._blocked_until = max(self._blocked_until, until)

    async def blocked_for(self) -> float:
        return max(0.0, self._blocked_until - asyncio.get_running_loop().time())
