"""Redis backends: one rate-limit budget and one token cache for many processes and hosts.

Needs the ``redis`` extra (``pip install 'loyaltylayer[redis]'``)::

    limiter = RedisRateLimiter.from_url("redis://redis.internal:6379/0")
    async with AsyncLoyaltyLayer.from_env(limiter=limiter) as client:
        ...
"""

from __future__ import annotations

from ._redis_connection import RedisUnavailableError
from ._redis_limiter import RedisLimiterStats, RedisRateLimiter
from ._redis_tokencache import RedisTokenCache

__all__ = ["RedisLimiterStats", "RedisRateLimiter", "RedisTokenCache", "RedisUnavailableError"]
