"""What belongs to one event loop: which loop holds it, and what becomes of it when another loop,
or a forked child, uses the object that keeps it.

An aiohttp session, a Redis client's connections, a future: each belongs to the loop it was made
on, and only that loop can use it or close it. A client outlives loops (a module-level client
used by one ``asyncio.run()`` after another, or by asgiref's one-off loop for each Django async
view under WSGI), so it keeps such a resource in a :class:`LoopBound`, for one loop at a time:

* on the loop that holds it, it is used as it is;
* on another loop, once the holder has stopped, a new one is made there. The old one is closed
  on its own loop, as that loop shuts down: an async generator of that loop keeps it, and
  ``loop.shutdown_asyncgens()`` (which ``asyncio.run()``, ``asyncio.Runner`` and the servers and
  frameworks built on them call before they close a loop) closes every async generator still
  open. A loop that has stopped without shutting down closes it if it ever runs again (asyncio
  closes an abandoned async generator on its own loop);
* in a forked child it is the parent's, sharing its sockets and its loop's epoll instance with
  the parent: it is buried (see ``_graveyard``), never used or closed, and a new one is made;
* on a second loop while the holder still runs (in another thread), the call fails with
  :class:`EventLoopError`: what belongs to a loop is not thread-safe.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from ._errors import EventLoopError
from ._graveyard import bury

__all__ = ["LoopBound", "leave_open"]

_T = TypeVar("_T")


class _Held(Generic[_T]):
    """A resource, the loop and process it belongs to, and the generator that closes it there."""

    __slots__ = ("closer", "loop_ref", "pid", "value")

    def __init__(
        self, value: _T, loop: asyncio.AbstractEventLoop, closer: AsyncGenerator[None, None]
    ) -> None:
        self.value = value
        self.loop_ref = weakref.ref(loop)
        self.pid = os.getpid()
        self.closer = closer


class LoopBound(Generic[_T]):
    """One ``_T`` at a time, for the running loop: made by ``make`` on first use on a loop, closed
    by ``close`` on that loop when it shuts down or :meth:`aclose` is called.

    ``first``, given ready-made, serves the loop and process that use it first (again after
    :meth:`aclose`, if that loop uses it again); ``make`` serves every other one.

    ``what`` names the resource in the error raised when two loops use it at once.
    """

    def __init__(
        self,
        make: Callable[[], _T],
        close: Callable[[_T], Awaitable[None]],
        *,
        what: str,
        first: _T | None = None,
    ) -> None:
        self._make = make
        self._close = close
        self._what = what
        self._first = first
        self._first_home: tuple[weakref.ref[asyncio.AbstractEventLoop], int] | None = None
        self._held: _Held[_T] | None = None

    @property
    def held(self) -> _T | None:
        """What it holds now, for whichever loop; ``None`` before its first use and once closed."""
        return None if self._held is None else self._held.value

    async def get(self) -> _T:
        """The running loop's resource, made now if this loop has none."""
        loop = asyncio.get_running_loop()
        held = self._held
        if held is not None and held.loop_ref() is loop and held.pid == os.getpid():
            return held.value
        if held is not None:
            self._let_go(held)
            self._held = None
        value = self._first_for(loop)
        if value is None:
            value = self._make()
        closer = _closes_with_loop(self._close, value)
        await anext(closer)  # started: the loop now closes it when it shuts down
        self._held = _Held(value, loop, closer)
        return value

    async def aclose(self) -> None:
        """Close the resource on its own loop: this one, or one still running in another thread.

        One of a loop that has stopped is closed by that loop (see the module's docstring); one
        of another process is the parent's and is left alone.
        """
        held, self._held = self._held, None
        if held is None:
            return
        loop = held.loop_ref()
        if held.pid != os.getpid():
            bury(held)
        elif loop is asyncio.get_running_loop():
            await held.closer.aclose()
        elif loop is not None and loop.is_running():
            # Not awaited: that loop may stop before it gets to it.
            asyncio.run_coroutine_threadsafe(_finish(held.closer), loop)

    def _first_for(self, loop: asyncio.AbstractEventLoop) -> _T | None:
        """``first``, if ``loop`` (in this process) is the one it serves."""
        if self._first is None:
            return None
        if self._first_home is None:
            self._first_home = (weakref.ref(loop), os.getpid())
            return self._first
        home, pid = self._first_home
        return self._first if home() is loop and pid == os.getpid() else None

    def _let_go(self, held: _Held[_T]) -> None:
        """Leave the resource of another loop or process to it, or refuse to take it over."""
        if held.pid != os.getpid():
            bury(held)
            return
        loop = held.loop_ref()
        if loop is not None and loop.is_running():
            raise EventLoopError(
                f"{self._what} is in use by an event loop running in another thread, and serves "
                "one event loop at a time: give each thread that runs an event loop its own "
                "(the sync LoyaltyLayer client may be shared by threads)"
            )


async def _closes_with_loop(
    close: Callable[[_T], Awaitable[None]], value: _T
) -> AsyncGenerator[None, None]:
    pid = os.getpid()
    try:
        yield
    finally:
        if os.getpid() == pid:  # a forked child that runs its copy of the loop leaves it alone
            await close(value)


async def _finish(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()


async def leave_open(_: object) -> None:
    """The ``close`` of a resource that is not ours to close, or has nothing to close."""
