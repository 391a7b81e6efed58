"""The access token: fetched on first need, shared by every call, refreshed before it expires.

Single-flight: however many calls need a token at once, one ``/auth/token`` request is made and
all of them wait for it. A refresh starts early (at 80 % of the lifetime, or two minutes before
expiry, whichever is later) while the current token keeps serving calls, so steady traffic never
waits for a refresh.

The refresh in flight is a task of one event loop, so the single-flight belongs to the loop that
uses it (see ``_loops``): a client used by a new loop, or in a forked child, starts its own.
The token itself carries over: its deadlines are loop times, and asyncio's loops all read
``time.monotonic()``. Under a loop with a clock of its own (virtual time) a token may be kept
past its life; the server's ``invalid_token`` answer then replaces it (see ``Transport``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import attrs

from ._logging import logger
from ._loops import LoopBound
from ._secrets import Secret
from ._tokencache import TokenCache

__all__ = ["IssuedToken", "TokenManager"]

_SHARED_TOKEN_RECHECK = 60.0


@attrs.frozen(kw_only=True)
class IssuedToken:
    """What a token request gave: the token and its life, in seconds from when it was issued.

    Not authlib's ``OAuth2Token``: that is a ``dict``, so its repr (in a log line, or a
    traceback that captures locals) shows the access token, and it dates expiry by the wall
    clock (``time.time()``, in whole seconds), which an NTP step or a test cannot move as it
    moves the event loop's monotonic clock that :class:`TokenManager` refreshes by.
    """

    access_token: str = attrs.field(repr=False)
    expires_in: float


class TokenManager:
    """Owns the client's bearer token; ``fetch`` makes the token request through the pipeline."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[IssuedToken]],
        *,
        cache: TokenCache | None = None,
        cache_key: str,
    ) -> None:
        self._fetch = fetch
        self._cache = cache
        self._cache_key = cache_key
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._flights = LoopBound(_Flight, _Flight.aclose, what="this client's token refresh")

    def __repr__(self) -> str:
        return f"<TokenManager cache_key={self._cache_key!r} has_token={self._token is not None}>"

    def current(self) -> str | None:
        """The token while no refresh is due: what nearly every call needs, without awaiting."""
        if self._token is not None and asyncio.get_running_loop().time() < self._refresh_at:
            return self._token
        return None

    async def token(self) -> str:
        """A valid access token, fetching or refreshing it when needed."""
        current = self.current()
        if current is not None:
            return current
        flight = await self._flights.get()
        now = asyncio.get_running_loop().time()
        inflight = flight.refresh
        if inflight is None or inflight.done():
            inflight = flight.refresh = asyncio.ensure_future(self._renew())
            inflight.add_done_callback(_consume_exception)
        if self._token is not None and now < self._expires_at:
            return self._token
        return await asyncio.shield(inflight)

    async def aclose(self) -> None:
        """Stop a refresh still running (the client is closing)."""
        await self._flights.aclose()

    async def invalidate(self, token: str) -> None:
        """The server rejected ``token``: forget it (unless a newer one already replaced it)."""
        if self._token == token:
            self._token = None
            self._refresh_at = self._expires_at = 0.0
        if self._cache is not None:
            await self._cache.discard(self._cache_key, token)

    async def _renew(self) -> str:
        loop = asyncio.get_running_loop()
        if self._cache is not None:
            shared = await self._cache.get(self._cache_key)
            if shared is not None and shared != self._token:
                return self._install(shared, loop.time(), refresh_in=_SHARED_TOKEN_RECHECK)
        issued = await self._fetch()
        now = loop.time()
        lifetime = issued.expires_in
        refresh_in = max(lifetime * 0.8, lifetime - 120.0)
        token = self._install(issued.access_token, now, refresh_in=refresh_in, lifetime=lifetime)
        if self._cache is not None:
            await self._cache.set(self._cache_key, token, refresh_in)
        logger.debug("access token obtained; refresh in %.0f s", refresh_in)
        return token

    def _install(
        self, token: str, now: float, *, refresh_in: float, lifetime: float | None = None
    ) -> Secret:
        """Serve ``token`` from now on, held as a :class:`Secret` (a cache hands back plain
        strings), and return it."""
        self._token = installed = Secret(token)
        self._refresh_at = now + refresh_in
        self._expires_at = now + (lifetime if lifetime is not None else refresh_in)
        return installed


class _Flight:
    """The refresh in flight on one event loop, if any."""

    __slots__ = ("refresh",)

    def __init__(self) -> None:
        self.refresh: asyncio.Future[str] | None = None

    async def aclose(self) -> None:
        refresh, self.refresh = self.refresh, None
        if refresh is not None and not refresh.done():
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refresh


def _consume_exception(future: asyncio.Future[str]) -> None:
    """A background refresh that failed must not be reported as 'exception never retrieved'."""
    if not future.cancelled():
        future.exception()
