"""Where access tokens are kept between requests, so many clients can share one.

The in-memory cache serves one process; a shared backend (Redis) lets N workers with the same
client_id use one token instead of each fetching their own, which would spend N requests of the
budget on every refresh.
"""

from __future__ import annotations

import abc

__all__ = ["TokenCache"]


class TokenCache(abc.ABC):
    """A store of access tokens keyed by (auth URL, client_id).

    Lifetimes are given in seconds from now, because processes do not share a clock; a backend
    expires entries on its own clock.
    """

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The cached token for ``key``, or ``None`` when there is none or it has expired."""

    @abc.abstractmethod
    async def set(self, key: str, token: str, ttl: float) -> None:
        """Keep ``token`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def discard(self, key: str, token: str) -> None:
        """Forget ``token`` (the server rejected it), unless another worker already replaced it."""
