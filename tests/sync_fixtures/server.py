"""A tiny aiohttp.web server on 127.0.0.1, run on its own thread (its own loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

_PEERS = web.AppKey("peers", set[object])


@web.middleware
async def _count_connections(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # One connection is one client (address, port) pair.
    assert request.transport is not None
    request.app[_PEERS].add(request.transport.get_extra_info("peername"))
    return await handler(request)


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["text"])


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="error")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="slow")


async def _connections(request: web.Request) -> web.Response:
    return web.Response(text=str(len(request.app[_PEERS])))


class Server:
    """``with Server() as server: server.url`` serves /echo/{text} (GET and POST), /status/{code},
    /slow?s=; ``keepalive_timeout`` is how long it keeps an idle connection open."""

    def __init__(self, *, keepalive_timeout: float = 75.0) -> None:
        self.url = ""
        self._keepalive_timeout = keepalive_timeout
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fixture-server")

    def __enter__(self) -> Server:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _app(self) -> web.Application:
        """What the server serves (a subclass serves something else)."""
        app = web.Application(middlewares=[_count_connections])
        app[_PEERS] = set()
        app.router.add_get("/echo/{text}", _echo)
        app.router.add_post("/echo/{text}", _echo)
        app.router.add_get("/status/{code}", _status)
        app.router.add_get("/slow", _slow)
        app.router.add_get("/connections", _connections)
        return app

    async def _start(self) -> None:
        # A client that goes away cancels its handler, so stopping never waits for /slow.
        self._runner = web.AppRunner(
            self._app(),
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            keepalive_timeout=self._keepalive_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


if (
    __name__ == "__main__"
):  # a server for subprocess tests: prints its URL, serves until stdin closes
    import sys

    with Server() as running:
        print(running.url, flush=True)
        sys.stdin.read()
