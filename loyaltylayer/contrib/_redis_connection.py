"""What the Redis backends share: their client for the running loop, opening a client from a
URL, and naming a server safely.

A redis.asyncio client's connections belong to the event loop they were opened on, and in a
forked child to the parent, whose sockets they share. So a backend keeps its client in a
:class:`RedisClients`, one per process and loop (see ``loyaltylayer._loops``).

Error messages name the Redis server so an operator knows which one is down, but a Redis URL
often carries a password; the name is therefore rebuilt from the connection settings, which
never include the password, instead of echoing the URL the user gave.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import ConfigurationError, EventLoopError, LoyaltyLayerError
from .._loops import LoopBound, leave_open

__all__ = ["UNAVAILABLE", "RedisClients", "RedisUnavailableError", "describe", "open_client"]

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when the server cannot be reached or does not answer in time."""


class RedisUnavailableError(LoyaltyLayerError):
    """The Redis server behind a shared limiter or token cache cannot be reached.

    ``server`` names it (``redis://host:port/db``) without any credentials.
    """

    retryable = True
    """The same request may go through once the server is back: it never reached the API."""

    def __init__(self, server: str, reason: BaseException) -> None:
        self.server = server
        super().__init__(f"Redis at {server} is unavailable: {reason}")


def open_client(url: str) -> aioredis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``), connecting lazily.

    Timeouts are set so a silent server fails a request within seconds instead of hanging every
    worker that waits for a lease. A URL redis-py cannot read is a :class:`ConfigurationError`
    that does not repeat it, nor redis-py's reason (which may quote the password as a port).
    """
    try:
        return aioredis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=5.0)
    except ValueError:
        raise ConfigurationError(
            "the Redis URL is not valid (it is not shown: it may hold a password); expected "
            "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
        ) from None


def describe(client: aioredis.Redis) -> str:
    """``redis://host:port/db`` (or ``rediss://``, ``unix://path``) of ``client``, no password."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        return f"unix://{kwargs.get('path', '')}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"


class RedisClients:
    """A backend's Redis client for the running process and event loop.

    One the backend opened from a URL (``reconnect_to``) is opened anew on each loop and in each
    process, and closed with its loop. One the user gave serves the first loop and process that
    use it, and is never replaced: another one gets an :class:`EventLoopError` that says so.
    ``close_client`` says whether the backend closes the client it was given.
    """

    def __init__(self, client: aioredis.Redis, *, owner: str, close_client: bool) -> None:
        self.server = describe(client)
        self._owner = owner
        self._url: str | None = None
        self._clients = LoopBound(
            self._reopen,
            aioredis.Redis.aclose if close_client else leave_open,
            what=f"this {owner}",
            first=client,
        )

    def reconnect_to(self, url: str) -> None:
        """Open a new client from ``url`` on each loop and in each process after the first."""
        self._url = url

    async def get(self) -> aioredis.Redis:
        return await self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    def _reopen(self) -> aioredis.Redis:
        if self._url is None:
            raise EventLoopError(
                f"the Redis client given to this {self._owner} belongs to the event loop and "
                "process that first used it, and it is now used on another one: make the "
                f"{self._owner} with from_url(), which connects anew in each process and loop"
            )
        return open_client(self._url)
