"""Helpers for the sandbox tests: a thin aiohttp client that speaks the wire contract."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from joserfc import jwe
from joserfc.jwk import KeySet

from loyaltylayer.sandbox import Sandbox

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
VISA = {"CardNumber": "4111111111111111", "CardExpiry": "12/39", "NameOnCard": "ADA", "Cvv": "123"}
HOLDER = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}


def standing_clock() -> Callable[[], float]:
    """A sandbox clock (``SandboxConfig(clock=...)``) at this whole second that moves only when a
    test advances it: a boundary 1 s or 1 ms away stays that far however slow the machine is."""
    standing = float(int(time.time()))
    return lambda: standing


def encrypt(card: Any, jwks: dict[str, Any], *, kid: str | None = None) -> str:
    """A compact JWE of ``card`` for the first served key, as the SDK will build it."""
    keys = KeySet.import_key_set(jwks)
    key = keys.keys[0]
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "application/json"}
    header["kid"] = kid if kid is not None else str(key.kid)
    plaintext = card if isinstance(card, bytes) else json.dumps(card).encode()
    return jwe.encrypt_compact(header, plaintext, key, algorithms=["RSA-OAEP-256", "A256GCM"])


class Reply:
    def __init__(self, status: int, body: Any, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class Api:
    """Plain aiohttp calls against one sandbox; ``token`` is fetched lazily once."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
        self.session = session
        self.sandbox = sandbox
        self.base = sandbox.base_url
        self._token: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        data: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if auth and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {await self.token()}"
        kwargs: dict[str, Any] = {"headers": sent}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            return Reply(resp.status, json.loads(text) if text else None, resp.headers)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body, **kwargs)

    async def token(self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
        if self._token is None or client_id != CLIENT_ID:
            reply = await self.post(
                "/auth/token", {"client_id": client_id, "client_secret": secret}, auth=False
            )
            assert reply.status == 200, reply
            if client_id != CLIENT_ID:
                return str(reply.body["access_token"])
            self._token = reply.body["access_token"]
        return self._token

    async def jwks(self) -> dict[str, Any]:
        reply = await self.request("GET", "/v1/card/encryption-keys")
        assert reply.status == 200, reply
        return dict(reply.body)

    async def tokenize(
        self, card: Any = None, *, plan_id: str = "pp-gold", card_type: str = "VISA", **kw: Any
    ) -> Reply:
        value = encrypt(card if card is not None else VISA, await self.jwks())
        body = {"encrypted_value": value, "plan_id": plan_id, "card_type": card_type}
        return await self.post("/v1/card/tokenize", body, **kw)

    async def enrol_token(self) -> str:
        reply = await self.tokenize()
        assert reply.status == 200, reply
        return str(reply.body["enrol_token"])

    async def create(self, plan_id: str = "pp-gold", **fields: Any) -> Reply:
        body: dict[str, Any] = {"plan_id": plan_id, "holder": dict(HOLDER), **fields}
        if plan_id in ("pp-gold", "lk-standard") and "enrol_token" not in fields:
            body["enrol_token"] = await self.enrol_token()
        return await self.post("/v1/pass/create", body)


def error_body(reply: Reply) -> dict[str, Any]:
    """The error body without its correlation id, after checking the id is the header's."""
    body = dict(reply.body)
    assert body.pop("correlation_id") == reply.headers["X-Correlation-ID"]
    return body
