"""The request pipeline's promises: retries, idempotency, tokens, server blocks, deadlines."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from sdk_env import CLIENT_ID, CLIENT_SECRET, card, holder, new_pass, paths, running

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, Sandbox, SandboxConfig

pytestmark = pytest.mark.looptime


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_transient_status_is_retried_with_one_idempotency_key(status: int) -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=status, times=2))
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        creates = paths(sandbox.journal(), "/v1/pass/create")
        assert [e.status for e in creates] == [status, status, 200]
        assert {e.idempotency_key for e in creates} == {created.idempotency_key}
        assert len({e.correlation_id for e in creates}) == 1
        assert len(sandbox.passes()) == 1


async def test_reset_connection_is_retried() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="reset", times=1))
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        assert (await client.passes.status(created.pass_id)).pass_id == created.pass_id
        assert [e.status for e in paths(sandbox.journal(), "/v1/pass/status")] == [None, 200]


async def test_commit_then_drop_ends_with_one_pass_replayed() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="commit_then_drop", times=1))
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        assert created.replayed is True
        creates = paths(sandbox.journal(), "/v1/pass/create")
        assert [(e.fault, e.replayed) for e in creates] == [
            ("commit_then_drop", False),
            (None, True),
        ]
        assert [p["pass_id"] for p in sandbox.passes()] == [created.pass_id]


async def test_commit_then_drop_on_a_batch_makes_no_duplicate() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="commit_then_drop", times=1))
        requests = [ll.PassRequest(plan_id="esim-5gb", holder=holder()) for _ in range(5)]
        result = await client.passes.batch_create(requests)
        assert [item.ok for item in result.items] == [True] * 5
        assert len(sandbox.passes()) == 5
        assert {p["pass_id"] for p in sandbox.passes()} == {
            item.pass_.pass_id for item in result.items if item.pass_
        }


async def test_gives_up_after_max_retries_with_the_key_on_the_error() -> None:
    async with running(max_retries=2) as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=502))
        with pytest.raises(ll.ProviderUnavailableError) as excinfo:
            await client.passes.create(plan_id="esim-5gb", holder=holder(), idempotency_key="k-1")
        error = excinfo.value
        assert (error.status, error.error, error.description) == (
            502,
            "server_error",
            "Provider operation failed.",
        )
        assert error.idempotency_key == "k-1"
        assert error.attempts == 3
        assert error.retryable is True
        assert len(paths(sandbox.journal(), "/v1/pass/create")) == 3


async def test_a_failed_token_request_is_retried_as_its_own_call_only() -> None:
    async with running(max_retries=2) as (sandbox, client):
        sandbox.add_fault(Fault(route="/auth/token", kind="status", status=502))
        with pytest.raises(ll.ProviderUnavailableError) as excinfo:
            await client.passes.status("pss_1")
        assert (excinfo.value.path, excinfo.value.attempts) == ("/auth/token", 3)
        journal = sandbox.journal()
        assert [(e.path, e.status) for e in journal] == [("/auth/token", 502)] * 3
        assert len({e.correlation_id for e in journal}) == 1
        assert excinfo.value.correlation_id == journal[0].correlation_id


@pytest.mark.parametrize("status", [400, 404, 409, 401])
async def test_client_errors_are_never_retried(status: int) -> None:
    async with running() as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="status", status=status))
        with pytest.raises(ll.APIStatusError) as excinfo:
            await client.passes.status(created.pass_id)
        assert excinfo.value.status == status
        assert excinfo.value.retryable is False
        assert len(paths(sandbox.journal(), "/v1/pass/status")) == 1


async def test_request_in_progress_is_retried_after_a_short_wait() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="latency", latency=2.0, times=1))
        first, second = await asyncio.gather(
            client.passes.create(plan_id="esim-5gb", holder=holder(), idempotency_key="same"),
            client.passes.create(plan_id="esim-5gb", holder=holder(), idempotency_key="same"),
        )
        assert first.pass_id == second.pass_id
        assert len(sandbox.passes()) == 1
        statuses = [e.status for e in paths(sandbox.journal(), "/v1/pass/create")]
        assert statuses.count(409) >= 1
        assert statuses.count(200) == 2


async def test_reused_key_with_another_body_is_a_conflict_not_retried() -> None:
    async with running() as (sandbox, client):
        await client.passes.create(plan_id="esim-5gb", holder=holder(), idempotency_key="k")
        with pytest.raises(ll.IdempotencyKeyReusedError):
            await client.passes.create(
                plan_id="esim-5gb", holder=holder(first_name="Grace"), idempotency_key="k"
            )
        assert [e.status for e in paths(sandbox.journal(), "/v1/pass/create")] == [200, 409]


async def test_a_thousand_concurrent_calls_fetch_one_token() -> None:
    async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.clear_journal()
        client._transport._auth._token = None
        results = await asyncio.gather(
            *(client.passes.status(created.pass_id) for _ in range(1000))
        )
        assert {r.pass_id for r in results} == {created.pass_id}
        assert len(paths(sandbox.journal(), "/auth/token")) == 1
        assert len(paths(sandbox.journal(), "/v1/pass/status")) == 1000


async def test_token_is_refreshed_before_it_expires() -> None:
    async with running(SandboxConfig(token_ttl=100.0)) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        await asyncio.sleep(85.0)
        await client.passes.status(created.pass_id)
        await asyncio.sleep(1.0)
        await client.passes.status(created.pass_id)
        statuses = [(e.path, e.status) for e in sandbox.journal()]
        assert statuses.count(("/auth/token", 200)) == 2
        assert ("/v1/pass/status", 401) not in statuses


async def test_expired_token_is_replaced_once_and_the_call_retried() -> None:
    async with running(SandboxConfig(token_ttl=100.0)) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.clock.advance(101.0)
        again = await client.passes.status(created.pass_id)
        assert again.pass_id == created.pass_id
        tail = [(e.path, e.status) for e in sandbox.journal()][-3:]
        assert tail == [("/v1/pass/status", 401), ("/auth/token", 200), ("/v1/pass/status", 200)]


async def test_a_server_block_pauses_every_call_then_resumes() -> None:
    config = SandboxConfig(rate_limit=10, rate_window=60.0, block=60.0)
    async with running(config, rate_limit=None) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(client.passes.status(created.pass_id) for _ in range(20)))
        assert len(results) == 20
        journal = sandbox.journal()
        blocks = [e.time for e in journal if e.status == 429]
        assert blocks
        for start in blocks:
            assert [e for e in journal if start + 0.01 < e.time < start + 59.99] == []
        assert loop.time() - started >= 60.0


async def test_rate_limit_error_carries_retry_after_when_retries_run_out() -> None:
    config = SandboxConfig(rate_limit=1, rate_window=60.0, block=60.0)
    async with running(config, rate_limit=None, max_retries=0) as (_, client):
        with pytest.raises(ll.RateLimitError) as excinfo:
            await client.passes.status("pss_x")
        assert excinfo.value.retry_after == 60
        assert excinfo.value.error == "rate_limit_exceeded"
        assert excinfo.value.description == "Retry after 60 seconds"
        assert await client.limiter.blocked_for() == pytest.approx(60.0, abs=0.01)


async def test_the_limiter_keeps_a_fixed_window_server_from_ever_blocking() -> None:
    async with running(SandboxConfig(rate_limit=100, rate_window=60.0)) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(client.passes.status(created.pass_id) for _ in range(250)))
        elapsed = asyncio.get_running_loop().time() - started
        journal = sandbox.journal()
        assert [e for e in journal if e.status == 429] == []
        assert len(journal) == 252
        assert 2 * 60.0 <= elapsed <= 2 * 61.0 + 1.0


async def test_per_attempt_timeout_then_success() -> None:
    async with running(timeout=1.0) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="latency", latency=5.0, times=1))
        before = client.attempts
        started = asyncio.get_running_loop().time()
        assert (await client.passes.status(created.pass_id)).pass_id == created.pass_id
        assert client.attempts - before == 2
        assert asyncio.get_running_loop().time() - started < 10.0


async def test_deadline_bounds_all_attempts() -> None:
    async with running(timeout=10.0, deadline=25.0, max_retries=10) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(Fault(route="/v1/pass/status", kind="latency", latency=60.0))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ll.APITimeoutError) as excinfo:
            await client.passes.status(created.pass_id)
        assert loop.time() - started == pytest.approx(25.0, abs=0.1)
        assert "deadline of 25.0 s exceeded" in str(excinfo.value)
        assert excinfo.value.correlation_id is not None


async def test_connection_refused_is_a_connection_error_with_correlation_id() -> None:
    async with running() as (sandbox, _):
        url = sandbox.base_url
    async with ll.AsyncLoyaltyLayer("a", "b", url, max_retries=1) as client:
        with pytest.raises(ll.APIConnectionError) as excinfo:
            await client.passes.status("pss_1")
    assert excinfo.value.correlation_id is not None
    assert excinfo.value.attempts == 2


async def test_calls_after_close_raise() -> None:
    async with running() as (_, client):
        await client.close()
        await client.close()
        with pytest.raises(ll.ClientClosedError):
            await client.passes.status("pss_1")


async def test_tokenize_idempotency_key_is_sent_and_replayed() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/card/tokenize", kind="commit_then_drop", times=1))
        token = await client.cards.tokenize(card(), plan_id="pp-gold", idempotency_key="tok-1")
        assert token.card_last4 == "1111"
        sent = paths(sandbox.journal(), "/v1/card/tokenize")
        assert [(e.idempotency_key, e.replayed) for e in sent] == [
            ("tok-1", False),
            ("tok-1", True),
        ]
        created = await client.passes.create(
            plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
        )
        assert created.status == "active"


async def test_new_pass_helper_counts_requests() -> None:
    async with running() as (_, client):
        await new_pass(client)
        assert client.attempts == 4


async def test_a_retry_that_would_end_past_the_deadline_is_not_waited_for() -> None:
    config = SandboxConfig(rate_limit=1, rate_window=60.0, block=60.0)
    async with running(config, rate_limit=None, deadline=30.0) as (sandbox, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ll.RateLimitError) as excinfo:
            await client.passes.status("pss_1")
        assert loop.time() - started < 1.0
        assert excinfo.value.retry_after == 60
        assert excinfo.value.attempts == 1
        assert [e.status for e in paths(sandbox.journal(), "/v1/pass/status")] == [429]


async def test_key_rotation_with_a_maximal_idempotency_key_stays_within_the_limit() -> None:
    async with running() as (sandbox, client):
        await client.cards.tokenize(card(), plan_id="pp-gold")
        sandbox.rotate_keys()
        key = "k" * 255
        token = await client.cards.tokenize(card(), plan_id="pp-gold", idempotency_key=key)
        assert token.card_last4 == "1111"
        sent = [e.idempotency_key for e in paths(sandbox.journal(), "/v1/card/tokenize")][-2:]
        assert sent[0] == key
        assert sent[1] is not None
        assert sent[1].startswith("rk_")
        assert len(sent[1]) == 67


async def test_a_429_asking_for_no_wait_is_retried_at_once_and_pauses_nobody() -> None:
    body = {
        "error": "rate_limit_exceeded",
        "error_description": "Retry now",
        "code": 429,
        "retry_after": 0,
    }
    async with running(rate_limit=None) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        sandbox.add_fault(
            Fault(route="/v1/pass/status", kind="status", status=429, body=body, times=1)
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await client.passes.status(created.pass_id)).pass_id == created.pass_id
        assert loop.time() - started < 0.01
        assert await client.limiter.blocked_for() == 0.0
        assert [e.status for e in paths(sandbox.journal(), "/v1/pass/status")] == [429, 200]


async def test_a_retry_due_after_close_is_not_sent() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=502, times=1))
        creating = asyncio.ensure_future(client.passes.create(plan_id="esim-5gb", holder=holder()))
        while not paths(sandbox.journal(), "/v1/pass/create"):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.001)
        await client.close()
        with pytest.raises(ll.ClientClosedError):
            await creating
        assert [e.status for e in paths(sandbox.journal(), "/v1/pass/create")] == [502]
        assert sandbox.passes() == []


@pytest.fixture
def unanswered_address() -> Iterator[str]:
    """A listening socket whose accept queue is full: a new connection never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
    host, port = server.getsockname()
    yield f"http://{host}:{port}"
    for sock in [server, *fillers]:
        sock.close()


async def test_a_connect_timeout_near_the_deadline_is_retried_until_the_deadline(
    unanswered_address: str,
) -> None:
    # Every attempt's total is cut short by the deadline (25 s left of a 30 s timeout), but
    # connecting gives up after 10 s: that is the attempt's own timeout, to be retried. The token
    # comes from a sandbox that answers, so that every attempt is the call's own.
    async with (
        Sandbox(SandboxConfig(seed=1)) as sandbox,
        ll.AsyncLoyaltyLayer(
            CLIENT_ID,
            CLIENT_SECRET,
            unanswered_address,
            auth_url=sandbox.base_url,
            timeout=30.0,
            deadline=25.0,
            max_retries=5,
            rate_limit=None,
        ) as client,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ll.APITimeoutError) as excinfo:
            await client.passes.status("pss_1")
    assert loop.time() - started == pytest.approx(25.0, abs=0.1)
    assert excinfo.value.attempts == 3  # connect timeouts at 10 s and 20 s, cut short at 25 s
