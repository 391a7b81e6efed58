"""Faults on demand: status errors, latency, resets and commit-then-drop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sandbox_api import HOLDER, Api, error_body

from loyaltylayer.sandbox import Fault, SandboxConfig

ESIM = {"plan_id": "esim-5gb", "holder": HOLDER}
CREATE = "/v1/pass/create"


@pytest.mark.parametrize(
    ("status", "error", "description"),
    [
        (500, "server_error", "Unexpected error; try again"),
        (502, "server_error", "Provider operation failed."),
        (504, "provider_timeout", "Provider operation failed."),
    ],
)
async def test_status_faults_use_the_guides_bodies(
    api: Api, status: int, error: str, description: str
) -> None:
    api.sandbox.add_fault(Fault(route=CREATE, kind="status", status=status, times=2))
    replies = [await api.post(CREATE, ESIM) for _ in range(3)]
    assert [r.status for r in replies] == [status, status, 200]
    assert error_body(replies[0]) == {
        "error": error,
        "error_description": description,
        "code": status,
    }
    assert len(api.sandbox.passes()) == 1
    assert [e.fault for e in api.sandbox.journal()[-3:]] == ["status", "status", None]
    assert [e.status for e in api.sandbox.journal()[-3:]] == [status, status, 200]


async def test_status_fault_with_own_body_and_429(api: Api) -> None:
    api.sandbox.add_fault(
        Fault(route=CREATE, kind="status", status=418, body={"teapot": True}, times=1)
    )
    api.sandbox.add_fault(Fault(route=CREATE, kind="status", status=429, times=1))
    api.sandbox.add_fault(Fault(route=CREATE, kind="status", status=503, times=1))
    assert (await api.post(CREATE, ESIM)).body == {"teapot": True}
    reply = await api.post(CREATE, ESIM)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "60"
    assert reply.body["retry_after"] == 60
    reply = await api.post(CREATE, ESIM)
    assert (reply.status, reply.body["error"]) == (503, "injected_fault")


async def test_after_method_and_wildcard(api: Api) -> None:
    api.sandbox.add_fault(
        Fault(route="*", method="get", kind="status", status=500, after=2, times=1)
    )
    statuses = [(await api.request("GET", "/v1/card/encryption-keys")).status for _ in range(4)]
    assert statuses == [200, 200, 500, 200]
    assert (await api.post(CREATE, ESIM)).status == 200
    [rule] = api.sandbox.faults()
    assert (rule["matched"], rule["fired"], rule["method"]) == (3, 1, "GET")


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:
    return SandboxConfig(rate_key="off", seed=42)


async def test_probability_is_seeded(api: Api) -> None:
    api.sandbox.add_fault(
        Fault(route="/v1/pass/status", kind="status", status=502, probability=0.5)
    )
    runs = []
    for _ in range(2):
        statuses = [
            (await api.post("/v1/pass/status", {"pass_id": "pss_x"})).status for _ in range(40)
        ]
        runs.append(statuses)
        api.sandbox.reset()
        api._token = None
        api.sandbox.add_fault(
            Fault(route="/v1/pass/status", kind="status", status=502, probability=0.5)
        )
    assert runs[0] == runs[1]
    assert 5 < runs[0].count(502) < 35
    assert set(runs[0]) == {404, 502}


@pytest.mark.looptime
async def test_latency_delays_before_processing(api: Api) -> None:
    await api.token()
    api.sandbox.add_fault(Fault(route=CREATE, kind="latency", latency=12.0, times=1))
    loop = asyncio.get_running_loop()
    start = loop.time()
    reply = await api.post(CREATE, ESIM)
    assert reply.status == 200
    assert loop.time() - start == pytest.approx(12.0, abs=0.1)
    entry = api.sandbox.journal()[-1]
    assert entry.fault == "latency"
    assert api.sandbox.clock.now() - entry.time == pytest.approx(12.0, abs=0.1)


async def test_reset_drops_before_processing(api: Api) -> None:
    api.sandbox.add_fault(Fault(route=CREATE, kind="reset", times=1))
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.post(CREATE, ESIM, headers={"Idempotency-Key": "r-1"})
    assert api.sandbox.passes() == []
    entry = api.sandbox.journal()[-1]
    assert (entry.status, entry.fault, entry.idempotency_key) == (None, "reset", "r-1")
    retry = await api.post(CREATE, ESIM, headers={"Idempotency-Key": "r-1"})
    assert retry.status == 200
    assert "Idempotent-Replayed" not in retry.headers
    assert len(api.sandbox.passes()) == 1


async def test_commit_then_drop_then_replay(api: Api) -> None:
    api.sandbox.add_fault(Fault(route=CREATE, kind="commit_then_drop", times=1))
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.post(CREATE, ESIM, headers={"Idempotency-Key": "c-1"})
    [made] = api.sandbox.passes()
    entry = api.sandbox.journal()[-1]
    assert (entry.status, entry.fault) == (200, "commit_then_drop")
    retry = await api.post(CREATE, ESIM, headers={"Idempotency-Key": "c-1"})
    assert retry.status == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.body == made
    assert len(api.sandbox.passes()) == 1


async def test_commit_then_drop_on_batch_items(api: Api) -> None:
    api.sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="commit_then_drop", times=1))
    body = {"passes": [{**ESIM, "idempotency_key": f"b-{i}"} for i in range(3)]}
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.post("/v1/pass/batch-create", body)
    made = api.sandbox.passes()
    reply = await api.post("/v1/pass/batch-create", body)
    assert [r["replayed"] for r in reply.body["results"]] == [True] * 3
    assert [r["pass"] for r in reply.body["results"]] == made


async def test_faults_are_journaled_and_rate_limited(api: Api) -> None:
    from loyaltylayer.sandbox import Sandbox

    async with Sandbox(SandboxConfig(rate_limit=2)) as sb:
        sb.add_fault(Fault(route="/auth/token", kind="status", status=500))
        sb.clock.advance(60.0 - sb.clock.now() % 60.0)
        body: dict[str, Any] = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}
        statuses = []
        for _ in range(3):
            async with api.session.post(sb.base_url + "/auth/token", json=body) as resp:
                statuses.append(resp.status)
        assert statuses == [500, 500, 429]
        assert [e.fault for e in sb.journal()] == ["status", "status", None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"route": "v1/x", "kind": "reset"}, "route"),
        ({"route": "/x", "kind": "explode"}, "kind"),
        ({"route": "/x", "kind": "status"}, "status"),
        ({"route": "/x", "kind": "status", "status": 200}, "status"),
        ({"route": "/x", "kind": "latency", "latency": -1}, "latency"),
        ({"route": "/x", "kind": "reset", "probability": 1.5}, "probability"),
        ({"route": "/x", "kind": "reset", "times": -1}, "times"),
        ({"route": "/x", "kind": "reset", "after": None}, "after"),
    ],
)
def test_bad_faults(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault(**kwargs)
