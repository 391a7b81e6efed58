"""``AsyncLoyaltyLayer`` of the fixture: an aiohttp client of the test server in ``server.py``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiohttp

from loyaltylayer._portal import bury

from ._resources import AsyncCards, AsyncPasses

DEFAULT_TIMEOUT = 10.0


class FixtureAPIError(Exception):
    """The server answered an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class AsyncLoyaltyLayer:
    """Fixture client: one aiohttp session, made lazily on the loop that first uses it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base_url = base_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._pid = os.getpid()
        self.yielded: list[int] = []
        self.finalized: list[str] = []

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client of ``$FIXTURE_BASE_URL``."""
        return cls(os.environ["FIXTURE_BASE_URL"], **overrides)

    @property
    def cards(self) -> AsyncCards:
        """Card operations."""
        return AsyncCards(self)

    @property
    def passes(self) -> AsyncPasses:
        """Pass operations."""
        return AsyncPasses(self)

    @property
    def base_url(self) -> str:
        """Where requests go."""
        return self._base_url

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is not None and self._pid != os.getpid():
            bury(self._session)  # the parent's: closing it here would break the parent
            self._session = None
        if self._session is None:
            self._session = aiohttp.ClientSession(self._base_url, timeout=self._timeout)
            self._pid = os.getpid()
        return self._session

    async def get(self, path: str) -> str:
        """GET ``path`` and return the body; an error status raises :class:`FixtureAPIError`."""
        session = await self._http()
        async with session.get(path) as response:
            try:
                response.raise_for_status()
            except aiohttp.ClientResponseError as exc:
                raise FixtureAPIError(exc.status) from exc
            return await response.text()

    async def connections(self) -> int:
        """Connections the server has accepted so far."""
        return int(await self.get("/connections"))

    async def pause(self, seconds: float) -> float:
        """Sleep on the loop without any I/O."""
        await asyncio.sleep(seconds)
        return seconds

    async def count(self, n: int, *, start: int = 0) -> AsyncIterator[int]:
        """Yield ``start`` .. ``start + n - 1``, one request each; record when it is closed."""
        try:
            for i in range(start, start + n):
                yield int(await self.get(f"/echo/{i}"))
                self.yielded.append(i)
        finally:
            self.finalized.append("count")

    @asynccontextmanager
    async def scope(self, name: str) -> AsyncIterator[str]:
        """Enter and leave ``name``, recording both."""
        self.finalized.append(f"enter {name}")
        try:
            yield await self.get(f"/echo/{name}")
        finally:
            self.finalized.append(f"exit {name}")

    async def close(self) -> None:
        """Close the session made in this process (inherited ones are left alone)."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._pid != os.getpid():
            bury(session)
            return
        await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
