"""The packaged OpenAPI document and plain HTTP helpers for the tests that hold things to it."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

import loyaltylayer as ll
from loyaltylayer.sandbox import ClientRegistration, SandboxThread
from loyaltylayer.sandbox._openapi import spec_text

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
BASIC_ID, BASIC_SECRET = "basic-client", "b@sic:sécret +%"
"""A client registered for client_secret_basic (its secret needs form-urlencoding)."""
JWT_ID = "jwt-client"
"""A client registered for private_key_jwt, with the public half of ``JWT_KEY``."""
JWT_KEY = RSAKey.generate_key(2048)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN = "/auth/token"
TOKENIZE = "/v1/card/tokenize"
BATCH = "/v1/pass/batch-create"

TEST_CARDS = {
    "VISA": "4111111111111111",
    "MASTERCARD": "5555555555554444",
    "AMEX": "378282246310005",
    "DISCOVER": "6011111111111117",
    "JCB": "3530111333300000",
    "UNIONPAY": "6200000000000005",
    "DINERS": "36227206271667",
}
"""A test PAN of each network the contract names (each Luhn-valid, of its network's range)."""


def client_auth_config() -> dict[str, Any]:
    """``SandboxConfig`` arguments: the demo client (client_secret_post), ``BASIC_ID``
    (client_secret_basic) and ``JWT_ID`` (private_key_jwt), as tests/test_client_auth.py
    registers them."""
    return {
        "clients": {CLIENT_ID: CLIENT_SECRET, BASIC_ID: BASIC_SECRET},
        "registrations": {
            BASIC_ID: ClientRegistration(token_auth_method="client_secret_basic"),
            JWT_ID: ClientRegistration(
                token_auth_method="private_key_jwt", public_key=JWT_KEY.as_pem(private=False)
            ),
        },
    }


def load_spec() -> dict[str, Any]:
    """A fresh copy of the document the sandbox serves (the JSON made from openapi.yaml)."""
    loaded: dict[str, Any] = json.loads(spec_text("json"))
    return loaded


def resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with a top-level ``$ref`` followed (to any depth)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_schema_names(spec: dict[str, Any]) -> set[str]:
    """Every component schema a response body can contain, nested ones included."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    visit(spec["components"]["schemas"][name])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for _path, _method, operation in operations(spec):
        for response in operation["responses"].values():
            response = resolve(spec, response)
            for media in response.get("content", {}).values():
                visit(media["schema"])
    return found


def strict_responses(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy where response objects may not carry properties the spec does not name.

    The published spec lets replies grow (the SDK keeps unknown fields); the sandbox is held to
    exactly what the spec says, so a field added to the sandbox alone fails a test. Schemas that
    are only ``allOf`` parts of another (``PassCommon``) are checked through the whole, and
    ``OtherPass`` stays open: a pass of an unknown type may carry anything.
    """
    strict = copy.deepcopy(spec)
    schemas = strict["components"]["schemas"]
    parts = {
        ref.rsplit("/", 1)[1]
        for schema in schemas.values()
        for part in schema.get("allOf", [])
        if isinstance(ref := part.get("$ref"), str)
    }
    for name in response_schema_names(spec) - parts - {"OtherPass"}:
        schema = schemas[name]
        if "properties" in schema or "allOf" in schema:
            schema["unevaluatedProperties"] = False
    return strict


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


class SandboxHttp:
    """Calls to one sandbox with ``requests`` (the client schemathesis uses too)."""

    def __init__(self, sandbox: SandboxThread) -> None:
        self.base_url = sandbox.base_url
        self.plans = sandbox.config.plans
        self.session = requests.Session()
        self.token = self.post(TOKEN, {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})[
            "access_token"
        ]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def call_kwargs(self) -> dict[str, Any]:
        """How schemathesis's ``case.call`` reaches this sandbox, signed in."""
        return {"base_url": self.base_url, "headers": self.auth, "session": self.session}

    def basic_authorization(self) -> dict[str, str]:
        """``BASIC_ID``'s HTTP Basic header (RFC 6749 §2.3.1: each part form-urlencoded)."""
        pair = f"{quote_plus(BASIC_ID, safe='')}:{quote_plus(BASIC_SECRET, safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    def client_assertion(self) -> str:
        """A fresh assertion of ``JWT_ID`` for this sandbox's token endpoint (RFC 7523)."""
        now = int(time.time())
        claims = {
            "iss": JWT_ID,
            "sub": JWT_ID,
            "aud": self.base_url + TOKEN,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": "RS256"}, claims, JWT_KEY)

    def post(self, path: str, body: Any) -> Any:
        headers = self.auth if path != TOKEN else {}
        reply = self.session.post(self.base_url + path, json=body, headers=headers, timeout=30)
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        return reply.json()

    def jwks(self) -> dict[str, Any]:
        reply = self.session.get(
            self.base_url + "/v1/card/encryption-keys", headers=self.auth, timeout=30
        )
        assert reply.status_code == 200, reply.text
        keys: dict[str, Any] = reply.json()
        return keys

    def encrypted_card(self, card_type: str) -> str:
        """A JWE of a valid card of ``card_type`` (a VISA for a type the contract does not name),
        made by the SDK's public ``encrypt_card`` with the sandbox's current key."""
        card = ll.Card(
            number=TEST_CARDS.get(card_type, TEST_CARDS["VISA"]),
            expiry="12/39",
            name="ADA LOVELACE",
            cvv="123",
        )
        return ll.encrypt_card(card, self.jwks())

    def enrol_token(self, plan_id: str) -> str:
        body = {
            "encrypted_value": self.encrypted_card("VISA"),
            "plan_id": plan_id,
            "card_type": "VISA",
        }
        token: str = self.post(TOKENIZE, body)["enrol_token"]
        return token

    def new_pass(self, plan_id: str = "esim-5gb") -> str:
        holder = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}
        body: dict[str, Any] = {"plan_id": plan_id, "holder": holder}
        if self.plans[plan_id].needs_enrol_token:
            body["enrol_token"] = self.enrol_token(plan_id)
        pass_id: str = self.post("/v1/pass/create", body)["pass_id"]
        return pass_id
