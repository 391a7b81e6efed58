"""An aiohttp web app that enrolls a cardholder per request, awaiting the async client.

One ``AsyncLoyaltyLayer`` lives as long as the app (made in a cleanup context, on the app's
loop), so every request shares its session, its access token and its rate limiter.

Run it against the local sandbox, no credentials needed::

    python examples/aiohttp_app.py --sandbox
    curl -X POST localhost:8080/passes -H 'Content-Type: application/json' -d '{
      "plan_id": "pp-gold", "card_number": "4111 1111 1111 1111", "card_expiry": "12/29",
      "name_on_card": "ADA LOVELACE", "cvv": "123",
      "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}'

Without ``--sandbox`` it reads LOYALTYLAYER_CLIENT_ID, _CLIENT_SECRET and _BASE_URL.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import loyaltylayer as ll
from loyaltylayer.sandbox import Sandbox, SandboxConfig

CLIENT = web.AppKey("client", ll.AsyncLoyaltyLayer)


def client_context(use_sandbox: bool) -> Any:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if use_sandbox:
            async with (
                Sandbox(SandboxConfig()) as sandbox,
                ll.AsyncLoyaltyLayer(
                    "sandbox-client", "sandbox-secret", sandbox.base_url
                ) as client,
            ):
                app[CLIENT] = client
                yield
        else:
            async with ll.AsyncLoyaltyLayer.from_env() as client:
                app[CLIENT] = client
                yield

    return context


async def create_pass(request: web.Request) -> web.Response:
    """Tokenize the card, then create the pass: two awaited calls, paced and retried."""
    body = await request.json()
    client = request.app[CLIENT]
    try:
        record = ll.EnrollRecord.from_row(body)
        token = await client.cards.tokenize(record.card, body["plan_id"])
        created = await client.passes.create(
            plan_id=body["plan_id"], enrol_token=token.enrol_token, holder=record.holder
        )
    except ll.ValidationError as error:
        return web.json_response({"errors": error.errors}, status=400)
    except ll.APIStatusError as error:
        return web.json_response(
            {"error": error.error, "correlation_id": error.correlation_id}, status=502
        )
    return web.json_response(
        {"pass_id": created.pass_id, "type": created.type, "status": str(created.status)},
        status=201,
    )


async def pass_status(request: web.Request) -> web.Response:
    try:
        found = await request.app[CLIENT].passes.status(request.match_info["pass_id"])
    except ll.NotFoundError:
        raise web.HTTPNotFound() from None
    return web.json_response({"pass_id": found.pass_id, "status": str(found.status)})


def make_app(*, use_sandbox: bool) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(client_context(use_sandbox))
    app.router.add_post("/passes", create_pass)
    app.router.add_get("/passes/{pass_id}", pass_status)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", action="store_true", help="use an embedded sandbox")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(make_app(use_sandbox=args.sandbox), host="127.0.0.1", port=args.port)
