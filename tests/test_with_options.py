"""``client.with_options(...)``: a view with other per-call options over the same client.

Wire-level checks go through a recording proxy in front of a sandbox thread (real time, no
waits); the retry and timeout checks run against a sandbox on the test's loop in virtual time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from recording_proxy import RecordingProxy
from sdk_env import CLIENT_ID, CLIENT_SECRET, holder, paths, running

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, SandboxConfig, SandboxThread


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread(SandboxConfig(rate_key="off", seed=1)) as server:
        yield server


@pytest.fixture
def proxy(sandbox: SandboxThread) -> Iterator[RecordingProxy]:
    with RecordingProxy(sandbox.base_url) as recording:
        yield recording


async def _pass_id(sandbox: SandboxThread) -> str:
    """A pass made by another client, straight at the sandbox (the proxy sees nothing)."""
    async with ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox.base_url) as client:
        return (await client.passes.create(plan_id="esim-5gb", holder=holder())).pass_id


def _check_shared(sandbox: SandboxThread, proxy: RecordingProxy) -> None:
    """One token, one connection, and the header on the view's requests only."""
    statuses = proxy.paths("/v1/pass/status")
    assert len(proxy.paths("/auth/token")) == 1
    assert [seen.headers.get("X-Tenant") for seen in statuses] == [None, "acme", "acme", "acme"]
    assert len({seen.peer for seen in proxy.seen}) == 1
    journal = paths(sandbox.journal(), "/v1/pass/status")
    assert len({entry.correlation_id for entry in journal}) == 4


async def test_a_view_shares_the_token_the_connections_and_the_limiter(
    sandbox: SandboxThread, proxy: RecordingProxy
) -> None:
    pass_id = await _pass_id(sandbox)
    async with ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, proxy.url) as client:
        await client.passes.status(pass_id)
        view = client.with_options(timeout=5, max_retries=1, extra_headers={"X-Tenant": "acme"})
        for _ in range(3):
            assert (await view.passes.status(pass_id)).pass_id == pass_id
        assert view.limiter is client.limiter
        assert (view.attempts, client.attempts) == (5, 5)  # the token request too
        assert type(view) is ll.AsyncLoyaltyLayer
    _check_shared(sandbox, proxy)


def test_a_sync_view_shares_the_token_the_connections_and_the_limiter(
    sandbox: SandboxThread, proxy: RecordingProxy
) -> None:
    pass_id = asyncio.run(_pass_id(sandbox))
    with ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, proxy.url) as client:
        client.passes.status(pass_id)
        view = client.with_options(timeout=5, max_retries=1, extra_headers={"X-Tenant": "acme"})
        for _ in range(3):
            assert view.passes.status(pass_id).pass_id == pass_id
        assert view.limiter is client.limiter
        assert (view.attempts, client.attempts) == (5, 5)
        assert type(view) is ll.LoyaltyLayer
    _check_shared(sandbox, proxy)


async def test_extra_headers_add_up_and_a_name_given_again_replaces(
    sandbox: SandboxThread, proxy: RecordingProxy
) -> None:
    pass_id = await _pass_id(sandbox)
    async with ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, proxy.url) as client:
        first = client.with_options(extra_headers={"X-Tenant": "acme", "X-Team": "cards"})
        second = first.with_options(extra_headers={"x-tenant": "globex"})
        await second.passes.status(pass_id)
        await first.cards.encryption_keys()
    sent = proxy.paths("/v1/pass/status")[0].headers
    assert (sent.getall("X-Tenant"), sent.getall("X-Team")) == (["globex"], ["cards"])
    assert proxy.paths("/v1/card/encryption-keys")[0].headers.getall("X-Tenant") == ["acme"]
    assert "X-Tenant" not in proxy.paths("/auth/token")[0].headers  # the client's own call


@pytest.mark.looptime
async def test_max_retries_timeout_and_deadline_are_the_views() -> None:
    async with running(max_retries=3) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="status", status=500))
        with pytest.raises(ll.ServerError) as once:
            await client.with_options(max_retries=0).passes.status(created.pass_id)
        with pytest.raises(ll.ServerError) as twice:
            await client.with_options(max_retries=1).passes.status(created.pass_id)
        assert (once.value.attempts, twice.value.attempts) == (1, 2)
        sandbox.clear_faults()

        sandbox.add_fault(Fault(route="/v1/pass/status", kind="latency", latency=10.0))
        hasty = client.with_options(timeout=2, max_retries=0)
        with pytest.raises(ll.APITimeoutError, match="no reply in time"):
            await hasty.passes.status(created.pass_id)
        with pytest.raises(ll.APITimeoutError, match=r"deadline of 4 s exceeded after 2 attempts"):
            await hasty.with_options(max_retries=5, deadline=4).passes.status(created.pass_id)
        assert (await client.passes.status(created.pass_id)).pass_id == created.pass_id


@pytest.mark.parametrize(
    ("options", "errors"),
    [
        (
            {"extra_headers": {"Authorization": "Bearer mine"}},
            {"extra_headers[Authorization]": "is set by the SDK itself and cannot be replaced"},
        ),
        (
            {"extra_headers": {"idempotency-KEY": "k", "X-Correlation-Id": "c"}},
            {
                "extra_headers[idempotency-KEY]": "is set by the SDK itself and cannot be replaced",
                "extra_headers[X-Correlation-Id]": (
                    "is set by the SDK itself and cannot be replaced"
                ),
            },
        ),
        (
            {"extra_headers": {"X-Tenant": "acme\r\nX-Evil: 1"}},
            {
                "extra_headers[X-Tenant]": (
                    "must be a string of printable ASCII characters (no line breaks)"
                )
            },
        ),
        (
            {"extra_headers": {"X Tenant": "acme"}},
            {"extra_headers": "header names must be HTTP tokens (letters, digits, -...)"},
        ),
        (
            {"extra_headers": [("X-Tenant", "acme")]},
            {"extra_headers": "must be a mapping of header names to strings"},
        ),
        (
            {"timeout": 0, "max_retries": -1, "deadline": True, "priority": "urgent"},
            {
                "timeout": "must be a positive number of seconds",
                "max_retries": "must be a whole number, 0 or more",
                "deadline": "must be a positive number of seconds, or None",
                "priority": "must be one of interactive, batch",
            },
        ),
    ],
    ids=["authorization", "key-and-correlation", "line-break", "bad-name", "not-mapping", "values"],
)
def test_bad_options_are_refused_naming_each_and_nothing_is_sent(
    sandbox: SandboxThread, options: dict[str, object], errors: dict[str, str]
) -> None:
    with (
        ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox.base_url) as client,
        pytest.raises(ll.ValidationError) as caught,
    ):
        client.with_options(**options)  # type: ignore[arg-type]
    assert caught.value.errors == errors
    assert "acme\r\n" not in str(caught.value)
    assert sandbox.journal() == []


async def test_options_not_given_are_kept_and_none_means_no_deadline() -> None:
    async with running(timeout=7, max_retries=2, deadline=50) as (_sandbox, client):
        view = client.with_options(priority="batch").with_options(deadline=None)
        kept = view._channel.options
        assert (kept.timeout, kept.max_retries, kept.deadline, kept.priority) == (
            7.0,
            2,
            None,
            "batch",
        )
        assert client._channel.options.deadline == 50  # the client is unchanged


async def test_closing_a_view_closes_the_client_it_views() -> None:
    async with running() as (_sandbox, client):
        view = client.with_options(timeout=3)
        await view.close()
        with pytest.raises(ll.ClientClosedError):
            await client.cards.encryption_keys()
