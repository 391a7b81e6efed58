"""Whatever a server answers, the client raises only the SDK's own exceptions (or succeeds)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_env import card, holder

import loyaltylayer as ll

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=15,
)
pass_like = st.fixed_dictionaries(
    {"pass_id": st.text(max_size=8), "type": st.sampled_from(["priority_pass", "esim", "x", 5])},
    optional={
        "status": st.sampled_from(["active", "odd", 3]),
        "holder": json_values,
        "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "nope", 1]),
        "iccid": json_values,
        "membership_number": json_values,
        "dmc_qr_data": st.text(max_size=5),
        "results": json_values,
        "access_token": st.text(max_size=8),
        "expires_in": json_values,
        "error": json_values,
        "retry_after": json_values,
    },
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    pass_like.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 404, 409, 418, 429, 500, 502, 503, 504])
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Idempotent-Replayed", "Content-Type"]),
    st.sampled_from(
        [
            "0",
            "60",
            "abc",
            "inf",
            "nan",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "true",
            "application/json",
        ]
    ),
    max_size=3,
)


class ScriptedServer:
    """A real loopback server that answers every request with the reply it was last given."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes, dict[str, str]] = (200, b"{}", {})
        self.url = ""
        self._started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, _: web.Request) -> web.Response:
        status, body, extra = self.reply
        if status == 204:
            body = b""
        return web.Response(status=status, body=body, headers=extra)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


async def _exercise(url: str, which: int) -> Any:
    async with ll.AsyncLoyaltyLayer(
        "id", "secret", url, rate_limit=None, max_retries=0, timeout=2.0
    ) as client:
        client._transport._auth._install("tok", 0.0, refresh_in=1e9)
        calls = [
            lambda: client.passes.status("pss_1"),
            lambda: client.passes.create(plan_id="esim", holder=holder()),
            lambda: client.passes.batch_create([ll.PassRequest(plan_id="p", holder=holder())]),
            lambda: client.cards.encryption_keys(),
            lambda: client.cards.tokenize(card(), plan_id="pp"),
            lambda: client.passes.cancel("pss_1"),
        ]
        return await calls[which]()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=statuses, body=bodies, extra=headers, which=st.integers(0, 5))
def test_any_reply_gives_a_result_or_an_sdk_error(
    server: ScriptedServer, status: int, body: bytes, extra: dict[str, str], which: int
) -> None:
    server.reply = (status, body, extra)
    raised: ll.LoyaltyLayerError | None = None
    try:
        result = asyncio.run(_exercise(server.url, which))
    except ll.LoyaltyLayerError as error:
        raised = error
    if raised is not None:
        assert str(raised)
        if isinstance(raised, ll.APIStatusError):
            assert raised.status == status
    elif isinstance(result, ll.BatchResult):
        assert len(result.items) == 1
        item = result.items[0]
        assert item.ok or isinstance(item.error, ll.LoyaltyLayerError)
    else:
        assert 200 <= status < 300
        assert result is not None


@pytest.mark.parametrize("status", [200, 400, 503])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_a_reply_nested_too_deep_to_parse_is_an_sdk_error(
    server: ScriptedServer, status: int, opener: bytes
) -> None:
    # json.loads raises RecursionError (not a ValueError) past about a thousand levels.
    server.reply = (status, opener * 100_000, {})
    with pytest.raises(ll.LoyaltyLayerError):
        asyncio.run(_exercise(server.url, 0))
