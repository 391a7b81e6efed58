"""OAuth tokens, bearer checks, correlation ids and the generic 400/404/405 answers."""

from __future__ import annotations

import pytest
from sandbox_api import CLIENT_ID, CLIENT_SECRET, Api, error_body, standing_clock

from loyaltylayer.sandbox import SandboxConfig


async def test_token_request_returns_an_opaque_bearer_token(api: Api) -> None:
    reply = await api.post(
        "/auth/token",
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
        },
        auth=False,
    )
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "token_type", "expires_in"}
    assert reply.body["token_type"] == "Bearer"
    assert reply.body["expires_in"] == 1800
    assert reply.headers["Cache-Control"] == "no-store"
    assert len(reply.body["access_token"]) >= 32


async def test_bad_credentials_get_the_guides_invalid_client_body(api: Api) -> None:
    for secret in ("wrong", ""):
        reply = await api.post(
            "/auth/token", {"client_id": CLIENT_ID, "client_secret": secret}, auth=False
        )
        assert reply.status == 401
        assert error_body(reply) == {
            "error": "invalid_client",
            "error_description": "Client authentication failed.",
            "code": 401,
        }
    reply = await api.post(
        "/auth/token", {"client_id": "nobody", "client_secret": CLIENT_SECRET}, auth=False
    )
    assert reply.body["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"client_id": "is required", "client_secret": "is required"}),
        ({"client_id": CLIENT_ID}, {"client_secret": "is required"}),
        ({"client_id": 5, "client_secret": CLIENT_SECRET}, {"client_id": "must be a string"}),
        (
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": 1},
            {"grant_type": "must be a string"},
        ),
        # Found by schemathesis: a null grant_type was taken as omitted and a token issued.
        (
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": None},
            {"grant_type": "must be a string"},
        ),
    ],
)
async def test_token_request_with_missing_or_wrong_fields(
    api: Api, body: dict[str, object], fields: dict[str, str]
) -> None:
    reply = await api.post("/auth/token", body, auth=False)
    assert reply.status == 400
    assert error_body(reply) == {
        "error": "invalid_request",
        "error_description": "The request has invalid or missing fields.",
        "code": 400,
        "fields": fields,
    }


async def test_other_grant_type_is_unsupported(api: Api) -> None:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "password"}
    reply = await api.post("/auth/token", body, auth=False)
    assert reply.status == 400
    assert error_body(reply) == {
        "error": "unsupported_grant_type",
        "error_description": "grant_type must be client_credentials.",
        "code": 400,
    }


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "token-without-scheme"]
)
async def test_missing_or_malformed_authorization_is_unauthorized(
    api: Api, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    reply = await api.request("GET", "/v1/card/encryption-keys", headers=headers, auth=False)
    assert reply.status == 401
    assert error_body(reply) == {
        "error": "unauthorized",
        "error_description": "Missing or invalid Authorization header.",
        "code": 401,
    }


async def test_unknown_token_is_invalid_token(api: Api) -> None:
    reply = await api.post(
        "/v1/pass/status", {"pass_id": "pss_x"}, headers={"Authorization": "Bearer nope"}
    )
    assert reply.status == 401
    assert error_body(reply) == {
        "error": "invalid_token",
        "error_description": "Access token is invalid or expired.",
        "code": 401,
    }


@pytest.mark.parametrize(
    "loyaltylayer_sandbox_config", [SandboxConfig(rate_key="off", clock=standing_clock())]
)
async def test_token_expires_after_its_lifetime(api: Api) -> None:
    token = await api.token()
    headers = {"Authorization": f"Bearer {token}"}
    api.sandbox.clock.advance(1799.0)
    assert (await api.request("GET", "/v1/card/encryption-keys", headers=headers)).status == 200
    api.sandbox.clock.advance(1.0)
    reply = await api.request("GET", "/v1/card/encryption-keys", headers=headers)
    assert reply.status == 401
    assert reply.body["error"] == "invalid_token"
    assert api.sandbox.journal()[-1].client_id == CLIENT_ID


@pytest.mark.parametrize(
    "loyaltylayer_sandbox_config", [SandboxConfig(rate_key="off", token_ttl=30.0)]
)
async def test_token_lifetime_is_configurable(api: Api) -> None:
    reply = await api.post(
        "/auth/token", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, auth=False
    )
    assert reply.body["expires_in"] == 30
    headers = {"Authorization": f"Bearer {reply.body['access_token']}"}
    api.sandbox.clock.advance(30.0)
    reply = await api.request("GET", "/v1/card/encryption-keys", headers=headers)
    assert reply.body["error"] == "invalid_token"


async def test_correlation_id_is_echoed_or_made(api: Api) -> None:
    reply = await api.post(
        "/v1/pass/status", {"pass_id": "pss_x"}, headers={"X-Correlation-ID": "abc-123"}
    )
    assert reply.headers["X-Correlation-ID"] == "abc-123"
    assert reply.body["correlation_id"] == "abc-123"
    reply = await api.post("/v1/pass/status", {"pass_id": "pss_x"})
    assert reply.headers["X-Correlation-ID"].startswith("corr_")
    assert reply.body["correlation_id"] == reply.headers["X-Correlation-ID"]
    ok = await api.request("GET", "/v1/card/encryption-keys", headers={"X-Correlation-ID": "k"})
    assert ok.headers["X-Correlation-ID"] == "k"
    assert api.sandbox.journal()[-1].correlation_id == "k"


async def test_unknown_path_and_wrong_method_answer_json(api: Api) -> None:
    reply = await api.request("GET", "/v1/nowhere", auth=False)
    assert reply.status == 404
    assert error_body(reply) == {
        "error": "not_found",
        "error_description": "No endpoint at /v1/nowhere.",
        "code": 404,
    }
    reply = await api.request("GET", "/v1/pass/create", auth=False)
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert error_body(reply) == {
        "error": "method_not_allowed",
        "error_description": "Use POST for /v1/pass/create.",
        "code": 405,
    }


@pytest.mark.parametrize(
    ("data", "content_type", "fields"),
    [
        (b"{not json", "application/json", {"body": "must be valid JSON"}),
        (b"", "application/json", {"body": "must be a JSON object"}),
        (b"\xff\xfe\x00", "application/json", {"body": "must be valid JSON"}),
        (b"[1, 2]", "application/json", {"body": "must be a JSON object"}),
        (b'"text"', "application/json", {"body": "must be a JSON object"}),
        (b"null", "application/json", {"body": "must be a JSON object"}),
        (b"[" * 100_000, "application/json", {"body": "must be valid JSON"}),
        (
            b"client_id=x",
            "application/x-www-form-urlencoded",
            {"Content-Type": "must be application/json"},
        ),
    ],
)
async def test_unreadable_bodies_are_invalid_requests(
    api: Api, data: bytes, content_type: str, fields: dict[str, str]
) -> None:
    for path in ("/auth/token", "/v1/pass/create", "/v1/card/tokenize"):
        reply = await api.post(path, data=data, headers={"Content-Type": content_type})
        assert reply.status == 400, (path, reply)
        assert reply.body["error"] == "invalid_request"
        assert reply.body["fields"] == fields


async def test_body_larger_than_a_mebibyte_is_an_invalid_request(api: Api) -> None:
    data = b'{"x": "' + b"a" * (1 << 20) + b'"}'
    reply = await api.post(
        "/v1/pass/create", data=data, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400
    assert reply.body["fields"] == {"body": "must be at most 1048576 bytes"}
