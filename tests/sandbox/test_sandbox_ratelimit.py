"""The rate limit: N per window per key, every request counts, then a block of B seconds."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sandbox_api import CLIENT_ID, CLIENT_SECRET, Api, error_body, standing_clock

from loyaltylayer.sandbox import Sandbox, SandboxConfig


@pytest.fixture
async def make() -> AsyncIterator[object]:
    """Start sandboxes with given config on the test's loop; yields an Api factory.

    Sandbox time stands still unless the test advances it (``clock=None`` follows the loop).
    """
    async with aiohttp.ClientSession() as session:
        started: list[Sandbox] = []

        async def factory(**config: object) -> Api:
            config.setdefault("clock", standing_clock())
            sb = Sandbox(SandboxConfig(**config))  # type: ignore[arg-type]
            await sb.start()
            started.append(sb)
            return Api(session, sb)

        yield factory
        for sb in started:
            await sb.close()


async def _keys(api: Api, n: int, token: str) -> list[int]:
    statuses = []
    for _ in range(n):
        reply = await api.request(
            "GET", "/v1/card/encryption-keys", headers={"Authorization": f"Bearer {token}"}
        )
        statuses.append(reply.status)
    return statuses


def _align(api: Api, window: float, at: float = 0.0) -> None:
    """Move the sandbox clock to ``at`` seconds into the next fixed window."""
    now = api.sandbox.clock.now()
    api.sandbox.clock.advance(math.floor(now / window) * window + window + at - now)


@pytest.mark.looptime
async def test_fixed_window_block_of_sixty_seconds(make: object) -> None:
    api = await make(rate_key="ip", clock=None)  # type: ignore[operator]
    _align(api, 60.0, at=1.0)
    token = await api.token()  # request 1: token requests count too
    assert await _keys(api, 99, token) == [200] * 99
    reply = await api.request("GET", "/v1/card/encryption-keys")
    assert reply.status == 429
    assert error_body(reply) == {
        "error": "rate_limit_exceeded",
        "error_description": "Retry after 60 seconds",
        "code": 429,
        "retry_after": 60,
    }
    assert reply.headers["Retry-After"] == "60"
    await asyncio.sleep(20.5)
    reply = await api.post(
        "/auth/token", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, auth=False
    )
    assert (reply.status, reply.body["retry_after"], reply.headers["Retry-After"]) == (
        429,
        40,
        "40",
    )
    assert reply.body["error_description"] == "Retry after 40 seconds"
    assert (await api.request("GET", "/nowhere", auth=False)).status == 429
    await asyncio.sleep(39.0)
    assert (await api.request("GET", "/v1/card/encryption-keys")).body["retry_after"] == 1
    await asyncio.sleep(0.5)
    assert (await api.request("GET", "/v1/card/encryption-keys")).status == 200
    statuses = [e.status for e in api.sandbox.journal()]
    assert statuses.count(429) == 4
    assert len(statuses) == 105


async def test_fixed_window_resets_each_window(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=5, rate_window=10.0, block=30.0)  # type: ignore[operator]
    _align(api, 10.0, at=9.0)
    token = await api.token()
    assert await _keys(api, 4, token) == [200] * 4
    api.sandbox.clock.advance(1.0)  # next window: the count starts again
    assert await _keys(api, 5, token) == [200] * 5
    assert await _keys(api, 1, token) == [429]


async def test_sliding_window_counts_the_last_window(make: object) -> None:
    api = await make(
        rate_key="ip", rate_limit=5, rate_window=10.0, window_kind="sliding", block=30.0
    )  # type: ignore[operator]
    _align(api, 10.0, at=9.0)
    token = await api.token()
    assert await _keys(api, 4, token) == [200] * 4
    api.sandbox.clock.advance(1.0)  # a fixed window would reset here; the sliding one does not
    assert await _keys(api, 1, token) == [429]
    api.sandbox.clock.advance(29.999)
    assert await _keys(api, 1, token) == [429]
    api.sandbox.clock.advance(0.001)
    # the request refused 0.001 s ago still counts: only 4 more fit in the last 10 s
    assert await _keys(api, 5, token) == [200, 200, 200, 200, 429]


async def test_sliding_window_admits_as_old_requests_leave(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=3, rate_window=10.0, window_kind="sliding")  # type: ignore[operator]
    token = await api.token()
    api.sandbox.clock.advance(5.0)
    assert await _keys(api, 2, token) == [200, 200]
    api.sandbox.clock.advance(5.0)  # the token request is now 10 s old: out of the window
    assert await _keys(api, 1, token) == [200]
    assert await _keys(api, 1, token) == [429]


async def test_requests_during_a_block_count(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=3, rate_window=100.0, block=10.0)  # type: ignore[operator]
    _align(api, 100.0)
    token = await api.token()
    assert await _keys(api, 3, token) == [200, 200, 429]
    api.sandbox.clock.advance(10.0)
    assert await _keys(api, 1, token) == [429]  # still window 1, now 5 requests in it
    api.sandbox.clock.advance(90.0)
    assert await _keys(api, 3, token) == [200, 200, 200]


async def test_rate_key_client_id_separates_clients(make: object) -> None:
    api = await make(rate_key="client_id", rate_limit=2, clients={"a": "sa", "b": "sb"})  # type: ignore[operator]
    _align(api, 60.0)
    token_a = await api.token("a", "sa")
    assert await _keys(api, 2, token_a) == [200, 429]
    token_b = await api.token("b", "sb")
    assert await _keys(api, 1, token_b) == [200]
    assert await _keys(api, 1, token_a) == [429]
    reply = await api.post("/auth/token", {"client_id": "a", "client_secret": "sa"}, auth=False)
    assert reply.status == 429


async def test_rate_key_ip_is_shared_by_clients(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=2, clients={"a": "sa", "b": "sb"})  # type: ignore[operator]
    _align(api, 60.0)
    await api.token("a", "sa")
    await api.token("b", "sb")
    reply = await api.post("/auth/token", {"client_id": "b", "client_secret": "sb"}, auth=False)
    assert reply.status == 429


async def test_rate_key_off_never_limits(make: object) -> None:
    api = await make(rate_key="off", rate_limit=1)  # type: ignore[operator]
    token = await api.token()
    assert await _keys(api, 20, token) == [200] * 20


async def test_control_plane_is_not_limited_and_batch_counts_once(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=3)  # type: ignore[operator]
    _align(api, 60.0)
    await api.token()
    holder = {"first_name": "A", "last_name": "B", "email": "a@b.co"}
    batch = {"passes": [{"plan_id": "esim-5gb", "holder": holder}] * 50}
    assert (await api.post("/v1/pass/batch-create", batch)).body["created"] == 50
    for _ in range(10):
        async with api.session.get(api.base + "/__sandbox/journal") as resp:
            assert resp.status == 200
    assert (await api.request("GET", "/v1/card/encryption-keys")).status == 200
    assert (await api.request("GET", "/v1/card/encryption-keys")).status == 429


# -- another service on the IP, and the optional headers -------------------------------------


async def _control(api: Api, method: str, path: str, body: object = None) -> tuple[int, object]:
    async with api.session.request(method, api.base + "/__sandbox/" + path, json=body) as resp:
        return resp.status, await resp.json()


async def test_background_traffic_counts_against_the_same_ip(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=10, rate_window=10.0, block=30.0, background_rate=4)  # type: ignore[operator]
    _align(api, 10.0)
    token = await api.token()  # the other service's first request comes with this one
    api.sandbox.clock.advance(9.0)  # 3 more of theirs by now, evenly spread: 4 in this window
    assert await _keys(api, 5, token) == [200] * 5
    assert await _keys(api, 1, token) == [429]  # 4 + 1 + 5 = 10, then one over
    api.sandbox.clock.advance(2.5)
    status, body = await _control(api, "GET", "background")
    assert (status, body) == (
        200,
        {"requests": 4, "key": "ip:127.0.0.1", "sent": 5, "refused": 1},
    )


async def test_background_traffic_is_set_through_the_control_plane(make: object) -> None:
    api = await make(rate_key="ip", rate_limit=3, rate_window=10.0)  # type: ignore[operator]
    _align(api, 10.0)
    token = await api.token()
    assert (await _control(api, "POST", "background", {"requests": 10}))[0] == 200
    api.sandbox.clock.advance(1.0)  # theirs at 0 and 1 s: with our token, the window is full
    assert await _keys(api, 1, token) == [429]
    status, body = await _control(api, "POST", "background", {"requests": 0})
    assert (status, body) == (200, {"requests": 0, "key": "ip:127.0.0.1", "sent": 2, "refused": 0})
    for bad in ({"requests": -1}, {"requests": 1.5}, {"requests": True}, {}, [3]):
        status, reply = await _control(api, "POST", "background", bad)
        assert status == 400
        assert reply["error"] == "invalid_request"  # type: ignore[index]


async def test_background_needs_rate_limiting_on(make: object) -> None:
    api = await make(rate_key="off")  # type: ignore[operator]
    status, reply = await _control(api, "GET", "background")
    assert status == 400
    assert "rate limiting is off" in reply["error_description"]  # type: ignore[index]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_background_rate_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match=r"SandboxConfig\.background_rate must be a whole number"):
        SandboxConfig(background_rate=bad)  # type: ignore[arg-type]


async def test_no_rate_limit_headers_unless_asked(make: object) -> None:
    api = await make(rate_key="ip")  # type: ignore[operator]
    reply = await api.request("GET", "/v1/card/encryption-keys", auth=False)
    assert not [name for name in reply.headers if name.lower().startswith("ratelimit")]


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
async def test_rate_limit_headers_say_what_is_left(make: object, kind: str) -> None:
    api = await make(  # type: ignore[operator]
        rate_key="ip",
        rate_limit=3,
        rate_window=10.0,
        window_kind=kind,
        block=30.0,
        rate_headers=True,
    )
    _align(api, 10.0, at=4.0)
    token = await api.token()
    reply = await api.request(
        "GET", "/v1/card/encryption-keys", headers={"Authorization": f"Bearer {token}"}
    )
    expected_reset = "6" if kind == "fixed" else "10"
    assert (
        reply.headers["RateLimit-Limit"],
        reply.headers["RateLimit-Remaining"],
        reply.headers["RateLimit-Reset"],
    ) == ("3", "1", expected_reset)
    assert (await api.request("GET", "/nowhere", auth=False)).headers["RateLimit-Remaining"] == "0"
    blocked = await api.request("GET", "/nowhere", auth=False)
    assert blocked.status == 429
    assert (blocked.headers["RateLimit-Remaining"], blocked.headers["RateLimit-Reset"]) == (
        "0",
        "30",
    )
