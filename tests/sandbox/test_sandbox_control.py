"""The control plane, the thread runner, the fixtures, the clock and the journal's secrecy."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from sandbox_api import CLIENT_SECRET, HOLDER, VISA, Api, encrypt

from loyaltylayer._config import is_loopback
from loyaltylayer.sandbox import Clock, Fault, Sandbox, SandboxConfig, SandboxThread


async def _control(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.session.request(method, api.base + "/__sandbox/" + path, json=body) as resp:
        return resp.status, await resp.json()


async def test_control_plane_endpoints(api: Api) -> None:
    await api.create("esim-5gb")
    status, body = await _control(api, "GET", "passes?client_id=sandbox-client")
    assert status == 200
    assert [p["type"] for p in body["passes"]] == ["esim"]
    assert (await _control(api, "GET", "passes?client_id=other"))[1] == {"passes": []}
    status, body = await _control(api, "GET", "journal")
    assert [e["path"] for e in body["entries"]] == ["/auth/token", "/v1/pass/create"]
    assert set(body["entries"][0]) == {
        "time", "method", "path", "status", "correlation_id", "idempotency_key", "item_keys",
        "client_id", "client_ip", "replayed", "fault", "batch_size",
    }  # fmt: skip
    assert (await _control(api, "DELETE", "journal"))[1] == {"entries": []}
    assert api.sandbox.journal() == []
    status, body = await _control(
        api,
        "POST",
        "faults",
        {"route": "/v1/pass/status", "kind": "status", "status": 504, "times": 1},
    )
    assert status == 201
    assert body["id"].startswith("flt_")
    assert body["status"] == 504
    assert (await api.post("/v1/pass/status", {"pass_id": "pss_x"})).status == 504
    status, body = await _control(api, "GET", "faults")
    assert [(f["matched"], f["fired"], f["times"]) for f in body["faults"]] == [(1, 1, 1)]
    assert (await _control(api, "DELETE", "faults"))[1] == {"faults": []}
    before = api.sandbox.clock.now()
    status, body = await _control(api, "POST", "clock", {"advance": 100})
    assert status == 200
    assert body["offset"] == 100.0
    assert body["now"] >= before + 100
    assert (await _control(api, "GET", "clock"))[1]["offset"] == 100.0
    old_kid = (await api.jwks())["keys"][0]["kid"]
    status, body = await _control(api, "POST", "keys/rotate")
    assert body["kid"] != old_kid
    assert (await api.jwks())["keys"][0]["kid"] == body["kid"]
    assert (await _control(api, "POST", "reset"))[1] == {"reset": True}
    assert api.sandbox.passes() == []
    assert api.sandbox.journal() == []
    reply = await api.request("GET", "/v1/card/encryption-keys")
    assert reply.body["error"] == "invalid_token"  # tokens do not survive a reset
    api._token = None
    assert (await api.jwks())["keys"][0]["kid"] == body["kid"]  # keys survive a reset


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "nothing", None, 404),
        ("GET", "reset", None, 405),
        ("POST", "faults", {"route": "/x", "kind": "bad"}, 400),
        ("POST", "faults", {"route": "/x", "kind": "reset", "colour": 1}, 400),
        ("POST", "faults", [1], 400),
        ("POST", "faults", {"route": "/x", "kind": "status", "status": 500, "body": [1]}, 400),
        ("POST", "clock", {"advance": -1}, 400),
        ("POST", "clock", {"advance": "1"}, 400),
    ],
)
async def test_control_plane_errors(
    api: Api, method: str, path: str, body: Any, status: int
) -> None:
    got, reply = await _control(api, method, path, body)
    assert got == status
    assert reply["code"] == status


def test_control_plane_is_loopback_only() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback(None)
    assert not is_loopback("bogus")


def test_sandbox_thread_from_sync_code(loyaltylayer_sandbox_thread: SandboxThread) -> None:
    sb = loyaltylayer_sandbox_thread
    data = json.dumps({"client_id": "sandbox-client", "client_secret": CLIENT_SECRET}).encode()
    request = urllib.request.Request(
        sb.base_url + "/auth/token", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 200
        assert resp.headers["X-Correlation-ID"].startswith("corr_")
    [entry] = sb.journal()
    assert (entry.path, entry.status, entry.client_id) == ("/auth/token", 200, "sandbox-client")
    fault_id = sb.add_fault(Fault(route="/auth/token", kind="status", status=502))
    assert [f["id"] for f in sb.faults()] == [fault_id]
    sb.clear_faults()
    assert sb.faults() == []
    kid = sb.rotate_keys()
    assert kid.startswith("sbx-")
    sb.clock.advance(5.0)
    sb.clear_journal()
    assert sb.journal() == []
    assert sb.passes() == []
    sb.reset()


def test_sandbox_thread_lifecycle() -> None:
    thread = SandboxThread(SandboxConfig())
    with pytest.raises(RuntimeError):
        thread.journal()
    thread.start()
    with pytest.raises(RuntimeError):
        thread.start()
    url = thread.base_url
    thread.close()
    thread.close()
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(url + "/auth/token", timeout=1)
    busy = SandboxThread(SandboxConfig())
    with busy, pytest.raises(OSError, match="address already in use"):
        SandboxThread(SandboxConfig(port=busy.port)).start()


async def test_sandbox_lifecycle_and_ipv6_url() -> None:
    sb = Sandbox()
    with pytest.raises(RuntimeError):
        _ = sb.base_url
    async with Sandbox(SandboxConfig(host="::1")) as v6:
        assert v6.base_url == f"http://[::1]:{v6.port}"
    await sb.start()
    with pytest.raises(RuntimeError):
        await sb.start()
    await sb.close()


def test_clock_sources_and_advance() -> None:
    now = [1000.0]
    clock = Clock(lambda: now[0])
    clock.advance(5.0)
    assert clock.now() == 1005.0
    now[0] = 2000.0
    assert clock.now() == 2005.0
    assert clock.offset == 5.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="non-negative"):
            clock.advance(bad)


async def test_injected_clock_drives_expiry() -> None:
    now = [1_800_000_000.0]
    async with Sandbox(SandboxConfig(clock=lambda: now[0], token_ttl=10.0, rate_key="off")) as sb:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            api = Api(session, sb)
            await api.token()
            assert sb.journal()[0].time == 1_800_000_000.0
            now[0] += 10.0
            assert (await api.request("GET", "/v1/card/encryption-keys")).body[
                "error"
            ] == "invalid_token"


@pytest.mark.looptime
async def test_default_clock_follows_the_loop_and_never_runs_back(api: Api) -> None:
    start = api.sandbox.clock.now()
    await asyncio.sleep(3600)
    assert api.sandbox.clock.now() - start == pytest.approx(3600, abs=1)


def test_config_validation() -> None:
    for bad in ({"port": 70000}, {"rate_limit": 0}, {"rate_window": 0}, {"block": float("inf")},
                {"window_kind": "rolling"}, {"rate_key": "user"}, {"clients": {"": "x"}},
                ):  # fmt: skip
        with pytest.raises(ValueError, match="SandboxConfig"):
            SandboxConfig(**bad)  # type: ignore[arg-type]
    assert "sandbox-secret" not in repr(SandboxConfig())


async def test_journal_never_holds_secrets(api: Api) -> None:
    pan, cvv = "4000056655665556", "4321"
    jwks = await api.jwks()
    value = encrypt({**VISA, "CardNumber": pan, "Cvv": cvv}, jwks)
    tokenized = await api.post(
        "/v1/card/tokenize",
        {"encrypted_value": value, "plan_id": "pp-gold", "card_type": "VISA"},
        headers={"Idempotency-Key": "tk"},
    )
    bad = encrypt({**VISA, "CardNumber": pan[:-1] + "0", "Cvv": cvv}, jwks)
    await api.post(
        "/v1/card/tokenize", {"encrypted_value": bad, "plan_id": "pp-gold", "card_type": "VISA"}
    )
    await api.post(
        "/auth/token",
        {"client_id": "sandbox-client", "client_secret": "wrong-" + CLIENT_SECRET},
        auth=False,
    )
    enrol = tokenized.body["enrol_token"]
    await api.post(
        "/v1/pass/batch-create",
        {"passes": [{"plan_id": "pp-gold", "enrol_token": enrol, "holder": HOLDER}]},
    )
    token = await api.token()
    async with api.session.get(api.base + "/__sandbox/journal") as resp:
        control = await resp.text()
    async with api.session.get(api.base + "/__sandbox/faults") as resp:
        control += await resp.text()
    text = repr(api.sandbox.journal()) + control
    for secret in (pan, pan[:-1] + "0", pan[-8:], value, bad, CLIENT_SECRET, token, enrol):
        assert secret not in text
    # Four digits can occur inside random ids; standing alone they would be the CVV.
    assert re.search(rf"(?<![\w.]){cvv}(?![\w.])", text) is None
    assert len(api.sandbox.journal()) == 6
