"""Random JSON at every endpoint never gets a 5xx, and the server keeps answering."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyaltylayer.sandbox import SandboxConfig, SandboxThread

PATHS = [
    "/auth/token", "/v1/card/encryption-keys", "/v1/card/tokenize", "/v1/pass/create",
    "/v1/pass/batch-create", "/v1/pass/status", "/v1/pass/update", "/v1/pass/cancel", "/v1/other",
]  # fmt: skip
KEYS = st.sampled_from([
    "client_id", "client_secret", "grant_type", "plan_id", "enrol_token", "holder", "reference",
    "metadata", "passes", "pass_id", "reason", "encrypted_value", "card_type", "idempotency_key",
    "first_name", "last_name", "email", "phone", "date_of_birth", "country",
]) | st.text(max_size=5)  # fmt: skip
KNOWN = ["pp-gold", "esim-5gb", "lk-standard", "sandbox-client", "a@b.co", "GB", "a.b.c.d.e"]
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(KNOWN)
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxThread, str]]:
    with SandboxThread(SandboxConfig(rate_key="off")) as sb:
        conn = http.client.HTTPConnection("127.0.0.1", sb.port)
        body = json.dumps({"client_id": "sandbox-client", "client_secret": "sandbox-secret"})
        conn.request("POST", "/auth/token", body, {"Content-Type": "application/json"})
        token = json.loads(conn.getresponse().read())["access_token"]
        yield sb, token


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    body=JSON | st.dictionaries(KEYS, JSON, max_size=6),
    raw=st.none() | st.binary(max_size=30),
    key=st.none() | st.text(max_size=8),
    auth=st.booleans(),
)
def test_random_json_never_gets_a_server_error(
    server: tuple[SandboxThread, str],
    path: str,
    method: str,
    body: Any,
    raw: bytes | None,
    key: str | None,
    auth: bool,
) -> None:
    sb, token = server
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None and key.isascii() and key.isprintable():
        headers["Idempotency-Key"] = key
    data = raw if raw is not None else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=5)
    conn.request(method, path, data, headers)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    conn.close()
    assert resp.status < 500, (resp.status, answer)
    if resp.status >= 400:
        assert answer["code"] == resp.status
        assert answer["correlation_id"] == resp.getheader("X-Correlation-ID")
        assert ("fields" in answer) == (answer["error"] == "invalid_request")
