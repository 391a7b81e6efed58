"""Idempotency-Key on every mutating endpoint, and batch-create with per-item keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sandbox_api import HOLDER, Api, error_body, standing_clock

from loyaltylayer.sandbox import Fault, SandboxConfig


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


ESIM = {"plan_id": "esim-5gb", "holder": HOLDER}


async def test_replay_returns_the_first_answer(api: Api) -> None:
    first = await api.post("/v1/pass/create", ESIM, headers=_key("k-1"))
    second = await api.post("/v1/pass/create", ESIM, headers=_key("k-1"))
    assert (first.status, second.status) == (200, 200)
    assert second.body == first.body
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(api.sandbox.passes()) == 1
    entries = api.sandbox.journal()[-2:]
    assert [(e.idempotency_key, e.replayed, e.status) for e in entries] == [
        ("k-1", False, 200),
        ("k-1", True, 200),
    ]


async def test_key_reused_with_another_body_or_endpoint(api: Api) -> None:
    await api.post("/v1/pass/create", ESIM, headers=_key("k-2"))
    expected = {
        "error": "idempotency_key_reused",
        "error_description": "This Idempotency-Key was already used with a different request.",
        "code": 409,
    }
    other_body = {**ESIM, "reference": "changed"}
    reply = await api.post("/v1/pass/create", other_body, headers=_key("k-2"))
    assert (reply.status, error_body(reply)) == (409, expected)
    pass_id = api.sandbox.passes()[0]["pass_id"]
    reply = await api.post("/v1/pass/cancel", {"pass_id": pass_id}, headers=_key("k-2"))
    assert (reply.status, error_body(reply)) == (409, expected)
    assert api.sandbox.passes()[0]["status"] == "active"


async def test_keys_are_scoped_per_client(api: Api) -> None:
    await api.post("/v1/pass/create", ESIM, headers=_key("shared"))
    other = await api.token("other", "other-secret")
    reply = await api.post(
        "/v1/pass/create",
        {**ESIM, "reference": "x"},
        headers={**_key("shared"), "Authorization": f"Bearer {other}"},
    )
    assert reply.status == 200
    assert "Idempotent-Replayed" not in reply.headers


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        rate_key="off",
        idempotency_ttl=600.0,
        clock=standing_clock(),
        clients={"sandbox-client": "sandbox-secret", "other": "other-secret"},
    )


@pytest.mark.looptime
async def test_request_in_progress(api: Api) -> None:
    api.sandbox.add_fault(Fault(route="/v1/pass/create", kind="latency", latency=0.3, times=1))
    first = asyncio.create_task(api.post("/v1/pass/create", ESIM, headers=_key("slow")))
    await asyncio.sleep(0.1)
    reply = await api.post("/v1/pass/create", ESIM, headers=_key("slow"))
    assert reply.status == 409
    assert error_body(reply) == {
        "error": "request_in_progress",
        "error_description": (
            "A request with this Idempotency-Key is still being processed; retry shortly."
        ),
        "code": 409,
    }
    assert (await first).status == 200
    again = await api.post("/v1/pass/create", ESIM, headers=_key("slow"))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body == (await first).body


async def test_keys_expire_after_the_ttl(api: Api) -> None:
    await api.post("/v1/pass/create", ESIM, headers=_key("k-ttl"))
    api.sandbox.clock.advance(599.0)
    assert (await api.post("/v1/pass/create", ESIM, headers=_key("k-ttl"))).headers.get(
        "Idempotent-Replayed"
    ) == "true"
    api.sandbox.clock.advance(1.0)
    reply = await api.post("/v1/pass/create", {**ESIM, "reference": "new"}, headers=_key("k-ttl"))
    assert reply.status == 200
    assert reply.body["reference"] == "new"
    assert len(api.sandbox.passes()) == 2


async def test_server_errors_are_not_stored(api: Api) -> None:
    api.sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=502, times=1))
    reply = await api.post("/v1/pass/create", ESIM, headers=_key("k-5xx"))
    assert reply.status == 502
    retry = await api.post("/v1/pass/create", ESIM, headers=_key("k-5xx"))
    assert retry.status == 200
    assert "Idempotent-Replayed" not in retry.headers
    assert len(api.sandbox.passes()) == 1


async def test_rejected_requests_are_not_stored_but_conflicts_are(api: Api) -> None:
    bad = {"plan_id": "esim-5gb", "holder": {}}
    assert (await api.post("/v1/pass/create", bad, headers=_key("k-400"))).status == 400
    reply = await api.post("/v1/pass/create", ESIM, headers=_key("k-400"))
    assert reply.status == 200
    assert "Idempotent-Replayed" not in reply.headers
    pass_id = reply.body["pass_id"]
    assert (await api.post("/v1/pass/cancel", {"pass_id": pass_id})).status == 200
    first = await api.post("/v1/pass/cancel", {"pass_id": pass_id}, headers=_key("k-409"))
    second = await api.post("/v1/pass/cancel", {"pass_id": pass_id}, headers=_key("k-409"))
    assert (first.status, second.status) == (409, 409)
    assert second.body == first.body
    assert second.headers["Idempotent-Replayed"] == "true"


async def test_every_mutating_endpoint_replays(api: Api) -> None:
    jwks = await api.jwks()
    from sandbox_api import VISA, encrypt

    tokenize = {"encrypted_value": encrypt(VISA, jwks), "plan_id": "pp-gold", "card_type": "VISA"}
    t1 = await api.post("/v1/card/tokenize", tokenize, headers=_key("t"))
    t2 = await api.post("/v1/card/tokenize", tokenize, headers=_key("t"))
    assert t2.body == t1.body
    assert t2.headers["Idempotent-Replayed"] == "true"
    pass_id = (await api.create("esim-5gb")).body["pass_id"]
    for path, body in (
        ("/v1/pass/update", {"pass_id": pass_id, "reference": "u"}),
        ("/v1/pass/cancel", {"pass_id": pass_id}),
        ("/v1/pass/batch-create", {"passes": [ESIM]}),
    ):
        first = await api.post(path, body, headers=_key(path))
        second = await api.post(path, body, headers=_key(path))
        assert first.status == 200, path
        assert second.body == first.body, path
        assert second.headers["Idempotent-Replayed"] == "true"
    assert len(api.sandbox.passes()) == 2


async def test_status_ignores_the_header(api: Api) -> None:
    pass_id = (await api.create("esim-5gb")).body["pass_id"]
    for _ in range(2):
        reply = await api.post("/v1/pass/status", {"pass_id": pass_id}, headers=_key("s"))
        assert reply.status == 200
        assert "Idempotent-Replayed" not in reply.headers


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_invalid_keys(api: Api, value: str) -> None:
    reply = await api.post("/v1/pass/create", ESIM, headers=_key(value))
    assert reply.status == 400
    assert reply.body["fields"] == {"Idempotency-Key": "must be 1-255 printable ASCII characters"}
    assert api.sandbox.passes() == []


async def test_longest_key_is_accepted(api: Api) -> None:
    assert (await api.post("/v1/pass/create", ESIM, headers=_key("~" * 255))).status == 200


# batch-create


def _item(**extra: Any) -> dict[str, Any]:
    return {**ESIM, **extra}


async def test_batch_partial_failure(api: Api) -> None:
    token = await api.enrol_token()
    items = [
        _item(),
        {"plan_id": "pp-gold", "holder": HOLDER, "enrol_token": token},
        {"plan_id": "pp-gold", "holder": HOLDER, "enrol_token": token},
        _item(holder={**HOLDER, "email": "nope"}),
        "not an object",
        _item(plan_id="unknown"),
    ]
    reply = await api.post("/v1/pass/batch-create", {"passes": items})
    assert reply.status == 200
    body = reply.body
    assert (body["created"], body["failed"]) == (2, 4)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [
        "created",
        "created",
        "failed",
        "failed",
        "failed",
        "failed",
    ]
    assert results[0]["replayed"] is False
    assert results[0]["pass"]["type"] == "esim"
    assert results[1]["pass"]["type"] == "priority_pass"
    corr = reply.headers["X-Correlation-ID"]
    assert results[2]["error"] == {
        "error": "invalid_enrol_token",
        "error_description": "Provided enrol_token is invalid or expired",
        "code": 400,
        "correlation_id": corr,
    }
    assert results[3]["error"]["fields"] == {"passes[3].holder.email": "must be an email address"}
    assert results[4]["error"]["fields"] == {"passes[4]": "must be an object"}
    assert results[5]["error"]["error"] == "invalid_plan_id"
    assert [p["pass_id"] for p in api.sandbox.passes()] == [
        results[0]["pass"]["pass_id"],
        results[1]["pass"]["pass_id"],
    ]
    entry = api.sandbox.journal()[-1]
    assert (entry.batch_size, entry.item_keys, entry.path) == (
        6,
        (None,) * 6,
        "/v1/pass/batch-create",
    )


async def test_batch_item_keys_replay_and_conflict(api: Api) -> None:
    first = await api.post(
        "/v1/pass/batch-create",
        {"passes": [_item(idempotency_key="i-1"), _item(idempotency_key="i-2")]},
    )
    made = [r["pass"] for r in first.body["results"]]
    items = [
        _item(idempotency_key="i-1"),
        _item(idempotency_key="i-2", reference="different"),
        _item(idempotency_key="i-3"),
        _item(idempotency_key="i-3"),
        _item(idempotency_key=""),
        _item(idempotency_key=7),
    ]
    reply = await api.post("/v1/pass/batch-create", {"passes": items})
    results = reply.body["results"]
    assert results[0] == {"index": 0, "status": "created", "pass": made[0], "replayed": True}
    assert results[1]["error"]["error"] == "idempotency_key_reused"
    assert results[2]["replayed"] is False
    assert results[3]["replayed"] is True
    assert results[3]["pass"] == results[2]["pass"]
    for index in (4, 5):
        assert results[index]["error"]["fields"] == {
            f"passes[{index}].idempotency_key": "must be 1-255 printable ASCII characters"
        }
    assert (reply.body["created"], reply.body["failed"]) == (3, 3)
    assert len(api.sandbox.passes()) == 3
    assert api.sandbox.journal()[-1].item_keys == ("i-1", "i-2", "i-3", "i-3", "", None)


async def test_batch_item_keys_share_create_keys(api: Api) -> None:
    created = await api.post("/v1/pass/create", ESIM, headers=_key("both"))
    reply = await api.post("/v1/pass/batch-create", {"passes": [_item(idempotency_key="both")]})
    assert reply.body["results"][0] == {
        "index": 0,
        "status": "created",
        "pass": created.body,
        "replayed": True,
    }


async def test_failed_item_key_can_be_retried(api: Api) -> None:
    reply = await api.post(
        "/v1/pass/batch-create", {"passes": [_item(idempotency_key="f", holder={})]}
    )
    assert reply.body["failed"] == 1
    reply = await api.post("/v1/pass/batch-create", {"passes": [_item(idempotency_key="f")]})
    assert reply.body["results"][0]["replayed"] is False
    assert reply.body["created"] == 1


@pytest.mark.parametrize(
    ("body", "error", "fields"),
    [
        ({}, "invalid_request", {"passes": "is required"}),
        ({"passes": {}}, "invalid_request", {"passes": "must be a list of pass requests"}),
        ({"passes": []}, "invalid_request", {"passes": "must hold 1 to 100 pass requests"}),
        ({"passes": [ESIM] * 101}, "batch_too_large", None),
    ],
)
async def test_batch_shape_errors(
    api: Api, body: dict[str, Any], error: str, fields: dict[str, str] | None
) -> None:
    reply = await api.post("/v1/pass/batch-create", body)
    assert reply.status == 400
    assert reply.body["error"] == error
    assert reply.body.get("fields") == fields
    if error == "batch_too_large":
        assert reply.body["error_description"] == "A batch holds at most 100 pass requests."
        assert api.sandbox.journal()[-1].batch_size == 101
    assert api.sandbox.passes() == []


async def test_batch_of_one_hundred(api: Api) -> None:
    reply = await api.post(
        "/v1/pass/batch-create", {"passes": [_item(reference=str(i)) for i in range(100)]}
    )
    assert reply.body["created"] == 100
    assert [p["reference"] for p in api.sandbox.passes()] == [str(i) for i in range(100)]
