"""A reverse proxy on 127.0.0.1 in front of a sandbox, recording what reaches it.

It forwards every request unchanged (method, path, headers, body) and hands the reply back, so a
test can read what the SDK put on the wire (headers, token-request bodies) and which connections
it opened. Its own thread and loop (a :class:`Server`): async and sync tests use it alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import attrs
from aiohttp import web
from multidict import CIMultiDict
from sync_fixtures.server import Server

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}
"""Not forwarded; ``Host`` is (the sandbox then sees the URL the client used, as behind a
reverse proxy that keeps it)."""


@attrs.frozen(kw_only=True)
class Seen:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    peer: tuple[str, int]


class RecordingProxy(Server):
    """``with RecordingProxy(sandbox.base_url) as proxy:`` point the client at ``proxy.url``;
    ``proxy.seen`` lists the requests in arrival order."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target.rstrip("/")
        self.seen: list[Seen] = []
        self._session: aiohttp.ClientSession | None = None

    def paths(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.cleanup_ctx.append(self._upstream)
        return app

    async def _upstream(self, _app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as self._session:
            yield

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        assert request.transport is not None
        body = await request.read()
        host, port = request.transport.get_extra_info("peername")[:2]
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                headers=CIMultiDict(request.headers),
                body=body,
                peer=(host, port),
            )
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.target + request.path_qs, headers=headers, data=body
        ) as reply:
            data = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=reply.status, body=data, headers=kept)
