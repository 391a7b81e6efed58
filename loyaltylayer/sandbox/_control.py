"""The control plane under ``/__sandbox/``: reset, faults, clock, journal, passes, key rotation,
the other service's traffic on the IP.

Loopback clients only (403 otherwise), never rate limited, never journaled.

A web page open in a browser on the same machine is a loopback client too, so the control plane
also refuses what only a browser sends it (403): a ``Host`` that is not a loopback address with
the sandbox's port (a DNS-rebinding page's own host name), an ``Origin`` other than the sandbox
itself, and a body that is not ``application/json`` (a form or ``text/plain`` post, which a page
may send anywhere without asking; a JSON one needs the CORS preflight the sandbox never grants).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .._config import is_loopback
from ._core import Core
from ._faults import Fault

__all__ = ["CONTROL_PREFIX", "handle_control"]

CONTROL_PREFIX = "/__sandbox/"


def _json(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _error(status: int, error: str, description: str) -> web.Response:
    return _json(status, {"error": error, "error_description": description, "code": status})


async def _body(request: web.Request) -> object:
    raw = await request.read()
    return json.loads(raw) if raw.strip() else {}


def _clock_state(core: Core) -> dict[str, float]:
    return {"now": core.clock.now(), "offset": core.clock.offset}


async def _faults(core: Core, request: web.Request) -> web.Response:
    if request.method == "GET":
        return _json(200, {"faults": core.faults.describe()})
    if request.method == "DELETE":
        core.faults.clear()
        return _json(200, {"faults": []})
    fault = Fault.from_json(await _body(request))
    return _json(201, {"id": core.faults.add(fault), **fault.to_json()})


async def _clock(core: Core, request: web.Request) -> web.Response:
    if request.method == "POST":
        raw = await _body(request)
        advance = raw.get("advance") if isinstance(raw, dict) else None
        if isinstance(advance, bool) or not isinstance(advance, int | float):
            raise ValueError('send {"advance": seconds}')
        core.clock.advance(float(advance))
    return _json(200, _clock_state(core))


async def _journal(core: Core, request: web.Request) -> web.Response:
    if request.method == "DELETE":
        core.journal.clear()
        return _json(200, {"entries": []})
    return _json(200, {"entries": [entry.to_json() for entry in core.journal.entries()]})


async def _passes(core: Core, request: web.Request) -> web.Response:
    client_id = request.query.get("client_id")
    return _json(200, {"passes": core.state.passes(client_id)})


async def _background(core: Core, request: web.Request) -> web.Response:
    limiter = core.limiter
    if limiter is None:
        raise ValueError("rate limiting is off (rate_key=off): there is no IP to share")
    if request.method == "POST":
        raw = await _body(request)
        requests = raw.get("requests") if isinstance(raw, dict) else None
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
            raise ValueError('send {"requests": N}, N a whole number of requests per window')
        limiter.set_background(requests, core.clock.now())
    return _json(200, limiter.background(core.clock.now()))


async def _reset(core: Core, _request: web.Request) -> web.Response:
    core.reset()
    return _json(200, {"reset": True})


async def _rotate(core: Core, _request: web.Request) -> web.Response:
    return _json(200, {"kid": core.rotate_keys()})


_ROUTES = {
    "reset": (("POST",), _reset),
    "faults": (("GET", "POST", "DELETE"), _faults),
    "clock": (("GET", "POST"), _clock),
    "journal": (("GET", "DELETE"), _journal),
    "passes": (("GET",), _passes),
    "keys/rotate": (("POST",), _rotate),
    "background": (("GET", "POST"), _background),
}


def _is_this_sandbox(request: web.Request, url: str) -> bool:
    """Whether ``url`` names a loopback host and the port this request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return is_loopback(parts.hostname) and sockname is not None and port == sockname[1]


def _browser_refusal(request: web.Request) -> str | None:
    """Why a request looks like a web page's rather than a test's or a script's, if it does."""
    if not _is_this_sandbox(request, f"http://{request.headers.get('Host', '')}"):
        return "The sandbox control plane answers requests to its loopback address only."
    origin = request.headers.get("Origin")
    if origin is not None and not _is_this_sandbox(request, origin):
        return "The sandbox control plane refuses requests from web pages of other origins."
    if request.body_exists and request.content_type != "application/json":
        return "The sandbox control plane accepts application/json bodies only."
    return None


async def handle_control(core: Core, request: web.Request) -> web.Response:
    if not is_loopback(request.remote):
        return _error(403, "forbidden", "The sandbox control plane answers loopback clients only.")
    refusal = _browser_refusal(request)
    if refusal is not None:
        return _error(403, "forbidden", refusal)
    found = _ROUTES.get(request.path[len(CONTROL_PREFIX) :])
    if found is None:
        return _error(404, "not_found", f"No control endpoint at {request.path}.")
    methods, handler = found
    if request.method not in methods:
        response = _error(405, "method_not_allowed", f"Use {', '.join(methods)}.")
        response.headers["Allow"] = ", ".join(methods)
        return response
    try:
        return await handler(core, request)
    except (ValueError, RecursionError) as exc:
        return _error(400, "invalid_request", str(exc))
