"""Redis backends: one rate-limit budget and one token cache for many processes and hosts.

Needs the ``redis`` extra (``pip install 'loyaltylayer[redis]'``)::

    limiter = RedisRateLimiter.from_url("redis://redis.internal:6379/0")
    async with AsyncLoyaltyLayer.from_env(rate_limit=limiter) as client:
        ...
    await limiter.aclose()

Or set ``LOYALTYLAYER_REDIS_URL`` and ``AsyncLoyaltyLayer.from_env()`` makes the limiter.
"""

from __future__ import annotations

from .._errors import ConfigurationError

try:
    import redis  # noqa: F401
except ImportError as error:
    if (error.name or "").partition(".")[0] != "redis":
        raise
    raise ConfigurationError(
        "the Redis backends need the redis package: pip install 'loyaltylayer[redis]'"
    ) from None

from ._redis_connection import RedisUnavailableError
from ._redis_limiter import RedisLimiterStats, RedisRateLimiter
from ._redis_tokencache import RedisTokenCache

__all__ = ["RedisLimiterStats", "RedisRateLimiter", "RedisTokenCache", "RedisUnavailableError"]
