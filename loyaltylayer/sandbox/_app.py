"""The API's request pipeline, in the order the real service applies it.

rate limit → route → bearer token → body → Idempotency-Key (replay or reserve) → fault →
endpoint → keep the answer for replay → journal. The control plane (``/__sandbox/``) and the
OpenAPI document (``/openapi.json``) skip all of it: neither is rate limited nor journaled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import struct
from typing import Any

from aiohttp import web

from ._control import CONTROL_PREFIX, handle_control
from ._core import Core
from ._errors import ApiError, canonical_fault_body, invalid_request, rate_limited
from ._faults import Fault
from ._handlers import BATCH_PATH, ROUTES, Call, Route, note_batch
from ._idempotency import Stored, digest
from ._journal import JournalEntry
from ._openapi import OPENAPI_PATH, handle_openapi
from ._validate import IDEMPOTENCY_KEY_RULE, is_idempotency_key, require_object

__all__ = ["make_app"]

_log = logging.getLogger("loyaltylayer.sandbox")

MAX_BODY = 1 << 20
_JSON = "application/json"
_CORRELATION_MAX = 255

Answer = tuple[int, Any, dict[str, str]]


class _Drop(Exception):
    """Close the connection without answering; ``status`` is what the journal records."""

    def __init__(self, *, reset: bool, status: int | None) -> None:
        super().__init__("connection dropped by a fault")
        self.reset = reset
        self.status = status


def _correlation_id(request: web.Request) -> str:
    given = request.headers.get("X-Correlation-ID")
    if given and len(given) <= _CORRELATION_MAX and all(" " < c <= "~" for c in given):
        return given
    return "corr_" + secrets.token_hex(12)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Missing or invalid Authorization header.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _invalid_token() -> ApiError:
    return ApiError(
        401,
        "invalid_token",
        "Access token is invalid or expired.",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


async def _read_json(request: web.Request) -> object:
    """The parsed body, or the ApiError it deserves (returned, raised only after auth)."""
    if "Content-Type" in request.headers:
        mime = request.content_type
        if mime != _JSON and not mime.endswith("+json"):
            return invalid_request({"Content-Type": "must be application/json"})
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return invalid_request({"body": f"must be at most {MAX_BODY} bytes"})
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return invalid_request({"body": "must be valid JSON"})


def _response(status: int, body: Any, headers: dict[str, str], correlation_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=_JSON,
        headers={**headers, "X-Correlation-ID": correlation_id},
    )


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        # Linger 0 turns close into a TCP RST, what a crashed proxy looks like to the client.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _storable(status: int) -> bool:
    """Answers the operation itself gave. A 400 rejected the request before anything ran, so a
    corrected retry under the same key (e.g. re-encrypted after a key rotation) is processed
    afresh; a 5xx is never kept, so a retry after it is processed again."""
    return status < 400 or status in (404, 409)


class _Pipeline:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handle_control(self._core, request)
        if request.path == OPENAPI_PATH:
            return await handle_openapi(request)
        core = self._core
        now = core.clock.now()
        call = Call(
            method=request.method,
            path=request.path,
            correlation_id=_correlation_id(request),
            client_ip=request.remote,
            received=now,
            now=now,
            url=str(request.url.with_query(None)),
            authorization=request.headers.get("Authorization"),
        )
        status: int | None = None
        try:
            try:
                status, body, headers = await self._answer(request, call)
            except _Drop as drop:
                status = drop.status
                _drop_connection(request, reset=drop.reset)
                return web.Response(status=204)
            return _response(status, body, headers, call.correlation_id)
        finally:
            core.journal.append(
                JournalEntry(
                    time=call.received,
                    method=call.method,
                    path=call.path,
                    status=status,
                    correlation_id=call.correlation_id,
                    idempotency_key=call.idempotency_key,
                    item_keys=call.item_keys,
                    client_id=call.client_id,
                    client_ip=call.client_ip,
                    replayed=call.replayed,
                    fault=call.fault,
                    batch_size=call.batch_size,
                )
            )

    async def _answer(self, request: web.Request, call: Call) -> Answer:
        try:
            return await self._process(request, call)
        except ApiError as error:
            return error.status, error.body(call.correlation_id), error.headers
        except (_Drop, asyncio.CancelledError):
            raise
        except Exception:
            _log.exception("sandbox bug while answering %s %s", call.method, call.path)
            bug = canonical_fault_body(500)
            return bug.status, bug.body(call.correlation_id), bug.headers

    def _rate_key(self, request: web.Request, call: Call, parsed: object) -> str:
        if self._core.config.rate_key == "client_id":
            token = _bearer(request)
            owner = self._core.state.token_owner(token) if token is not None else None
            if owner is not None:
                return "client:" + owner[0]
            if call.path == "/auth/token" and isinstance(parsed, dict):
                claimed = parsed.get("client_id")
                if isinstance(claimed, str):
                    return "client:" + claimed
        return f"ip:{call.client_ip}"

    def _authenticate(self, request: web.Request, call: Call) -> None:
        token = _bearer(request)
        if token is None:
            raise _unauthorized()
        owner = self._core.state.token_owner(token)
        if owner is None:
            raise _invalid_token()
        call.client_id = owner[0]
        if owner[1] <= call.now:
            raise _invalid_token()

    async def _process(self, request: web.Request, call: Call) -> Answer:
        parsed: object = None
        if request.method == "POST" and request.body_exists:
            parsed = await _read_json(request)
        limiter = self._core.limiter
        if limiter is None:
            return await self._route(request, call, parsed)
        key = self._rate_key(request, call, parsed)
        blocked = limiter.hit(key, call.now)
        rate_headers = limiter.headers(key, call.now)
        try:
            if blocked > 0:
                raise rate_limited(blocked)
            status, body, headers = await self._route(request, call, parsed)
        except ApiError as error:
            error.headers.update(rate_headers)
            raise
        return status, body, {**headers, **rate_headers}

    async def _route(self, request: web.Request, call: Call, parsed: object) -> Answer:
        core = self._core
        route = ROUTES.get(call.path)
        if route is None:
            raise ApiError(404, "not_found", f"No endpoint at {call.path}.")
        if request.method != route.method:
            raise ApiError(
                405,
                "method_not_allowed",
                f"Use {route.method} for {call.path}.",
                headers={"Allow": route.method},
            )
        if route.authenticated:
            self._authenticate(request, call)
        if isinstance(parsed, ApiError):
            raise parsed
        body = require_object(parsed) if route.method == "POST" else {}
        if call.path == BATCH_PATH:
            note_batch(call, body)
        key = self._idempotency_key(request, call, route)
        if key is not None:
            assert call.client_id is not None
            stored = core.idempotency.begin(call.client_id, key, digest(call.path, body), call.now)
            if stored is not None:
                call.replayed = True
                return stored.status, stored.body, {"Idempotent-Replayed": "true"}
        try:
            return await self._run(route, call, body, key)
        finally:
            if key is not None:
                assert call.client_id is not None
                core.idempotency.abandon(call.client_id, key)

    def _idempotency_key(self, request: web.Request, call: Call, route: Route) -> str | None:
        key = request.headers.get("Idempotency-Key") if route.idempotent else None
        if key is None:
            return None
        call.idempotency_key = key
        if not is_idempotency_key(key):
            raise invalid_request({"Idempotency-Key": IDEMPOTENCY_KEY_RULE})
        return key

    async def _run(self, route: Route, call: Call, body: dict[str, Any], key: str | None) -> Answer:
        core = self._core
        fault = core.faults.pick(call.method, call.path)
        if fault is not None:
            call.fault = fault.kind
            if fault.kind == "latency":
                await asyncio.sleep(fault.latency)
                call.now = core.clock.now()
            elif fault.kind == "status":
                return _fault_answer(fault, call)
            elif fault.kind == "reset":
                raise _Drop(reset=True, status=None)
        try:
            status, answer, headers = 200, route.handler(core, call, body), dict(route.headers)
        except ApiError as error:
            status, answer, headers = error.status, error.body(call.correlation_id), error.headers
        if key is not None and _storable(status):
            assert call.client_id is not None
            core.idempotency.finish(
                call.client_id, key, Stored(status=status, body=answer), call.now
            )
        if fault is not None and fault.kind == "commit_then_drop":
            raise _Drop(reset=False, status=status)
        return status, answer, headers


def _fault_answer(fault: Fault, call: Call) -> Answer:
    assert fault.status is not None
    if fault.body is not None:
        return fault.status, dict(fault.body), {}
    error = canonical_fault_body(fault.status)
    return error.status, error.body(call.correlation_id), error.headers


def make_app(core: Core) -> web.Application:
    """One catch-all route: the pipeline routes itself, so unknown paths count and get JSON."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", _Pipeline(core).handle)
    return app
