"""Running a sandbox: on the caller's event loop (:class:`Sandbox`) or on its own thread
(:class:`SandboxThread`, for synchronous code). Both expose the same handle methods."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from ._app import make_app
from ._clock import Clock
from ._config import SandboxConfig
from ._core import Core
from ._faults import Fault
from ._journal import JournalEntry
from ._keys import KeyRing, generate_key

__all__ = ["Sandbox", "SandboxThread"]

T = TypeVar("T")

_SHUTDOWN_TIMEOUT = 0.5


class Sandbox:
    """A sandbox served on the running event loop; ``port=0`` picks a free port.

    ``async with Sandbox(config) as sb:`` starts it and stops it. The handle methods are plain
    functions: call them from the loop the sandbox runs on.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.clock = Clock(self.config.clock)
        if self.config.encryption_key_pem is not None:
            keys = KeyRing.from_pem(self.config.encryption_key_pem, created_at=self.clock.now())
        else:
            keys = KeyRing(generate_key(fresh=False), created_at=self.clock.now())
        self._core = Core(self.config, self.clock, keys)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("this Sandbox is already running")
        if self.config.clock is None:
            self.clock.bind(asyncio.get_running_loop())
        runner = web.AppRunner(
            make_app(self._core), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the Sandbox has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def add_fault(self, fault: Fault) -> str:
        """Add a fault rule after the existing ones; returns its id."""
        return self._core.faults.add(fault)

    def clear_faults(self) -> None:
        self._core.faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The rules with how often each matched and fired."""
        return self._core.faults.describe()

    def journal(self) -> list[JournalEntry]:
        """Every API request so far, oldest first."""
        return self._core.journal.entries()

    def clear_journal(self) -> None:
        self._core.journal.clear()

    def passes(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Passes as the API would return them, of one client (or of all), oldest first."""
        return self._core.state.passes(client_id)

    def rotate_keys(self) -> str:
        """Make a fresh key active and retire the old kid; returns the new kid."""
        return self._core.rotate_keys()

    def reset(self) -> None:
        """Fresh passes, tokens, idempotency records, limiter, journal and faults; same keys."""
        self._core.reset()


class SandboxThread:
    """A :class:`Sandbox` on a daemon thread with its own event loop, for synchronous code.

    Use it as a context manager, or call :meth:`start` and :meth:`close`. Every method is
    thread-safe: it runs on the sandbox's loop and waits for the result.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._sandbox = Sandbox(config)
        self.config = self._sandbox.config
        self.clock = self._sandbox.clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this SandboxThread is already running")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(started,), name="loyaltylayer-sandbox", daemon=True
        )
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    def _main(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(started))
        finally:
            loop.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stopped = asyncio.Event()
        try:
            await self._sandbox.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            await self._stopped.wait()
        finally:
            await self._sandbox.close()

    def close(self) -> None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None or loop is None or stopped is None:
            return
        loop.call_soon_threadsafe(stopped.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> SandboxThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, function: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("the SandboxThread has not been started")

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    @property
    def port(self) -> int:
        return self._sandbox.port

    @property
    def base_url(self) -> str:
        return self._sandbox.base_url

    def add_fault(self, fault: Fault) -> str:
        return self._call(lambda: self._sandbox.add_fault(fault))

    def clear_faults(self) -> None:
        self._call(self._sandbox.clear_faults)

    def faults(self) -> list[dict[str, Any]]:
        return self._call(self._sandbox.faults)

    def journal(self) -> list[JournalEntry]:
        return self._call(self._sandbox.journal)

    def clear_journal(self) -> None:
        self._call(self._sandbox.clear_journal)

    def passes(self, client_id: str | None = None) -> list[dict[str, Any]]:
        return self._call(lambda: self._sandbox.passes(client_id))

    def rotate_keys(self) -> str:
        return self._call(self._sandbox.rotate_keys)

    def reset(self) -> None:
        self._call(self._sandbox.reset)
