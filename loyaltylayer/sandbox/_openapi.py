"""The API's OpenAPI document, as the package ships it: served at ``/openapi.json``.

``loyaltylayer/openapi.yaml`` is the spec people edit; ``openapi.json`` beside it is the same
document, written by ``tools/gen_openapi.py`` (a test fails when it is stale), so the sandbox
serves and prints it without a YAML parser.
"""

from __future__ import annotations

import functools
import importlib.resources

from aiohttp import web

from ._errors import ApiError

__all__ = ["OPENAPI_PATH", "handle_openapi", "spec_text"]

OPENAPI_PATH = "/openapi.json"
_FORMATS = {"json": "openapi.json", "yaml": "openapi.yaml"}


@functools.cache
def spec_text(fmt: str = "json") -> str:
    """The spec as shipped: ``json`` (what the sandbox serves) or ``yaml`` (the source)."""
    return importlib.resources.files("loyaltylayer").joinpath(_FORMATS[fmt]).read_text("utf-8")


async def handle_openapi(request: web.Request) -> web.Response:
    """Unauthenticated, never rate limited or journaled: the document is public."""
    if request.method not in ("GET", "HEAD"):
        error = ApiError(405, "method_not_allowed", f"Use GET for {OPENAPI_PATH}.")
        return web.json_response(error.body(None), status=405, headers={"Allow": "GET, HEAD"})
    return web.Response(text=spec_text("json"), content_type="application/json")
