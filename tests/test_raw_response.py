"""``client.with_raw_response.<resource>.<method>()``: the HTTP reply with its model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sdk_env import CLIENT_ID, CLIENT_SECRET, card, holder, paths, running

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, SandboxConfig, SandboxThread

pytestmark = pytest.mark.looptime


def _check(raw: ll.APIResponse[ll.Pass], journal: list[ll.sandbox.JournalEntry]) -> None:
    """What every raw reply must say, checked against what the sandbox saw."""
    last = journal[-1]
    assert raw.status == 200
    assert raw.correlation_id == last.correlation_id
    assert raw.headers["X-Correlation-ID"] == last.correlation_id
    assert raw.idempotency_key == last.idempotency_key
    assert raw.replayed is last.replayed
    assert raw.attempts == len([e for e in journal if e.correlation_id == raw.correlation_id])
    assert raw.elapsed >= raw.lease_wait >= 0.0


async def test_every_method_returns_its_reply_and_parses_to_the_plain_result() -> None:
    async with running() as (sandbox, client):
        raw = client.with_raw_response
        keys = await raw.cards.encryption_keys()
        assert keys.parse() == await client.cards.encryption_keys()
        token = await raw.cards.tokenize(card(), plan_id="pp-gold", idempotency_key="tok-1")
        _check(token, paths(sandbox.journal(), "/v1/card/tokenize"))
        assert token.idempotency_key == "tok-1"
        assert isinstance(token.parse(), ll.CardToken)

        created = await raw.passes.create(
            plan_id="pp-gold", enrol_token=token.parse().enrol_token, holder=holder()
        )
        _check(created, paths(sandbox.journal(), "/v1/pass/create"))
        pass_id = created.parse().pass_id
        assert created.parse() is created.parse()  # parsed once
        status = await raw.passes.status(pass_id)
        _check(status, paths(sandbox.journal(), "/v1/pass/status"))
        assert status.idempotency_key is None
        assert status.parse() == await client.passes.status(pass_id)
        update = await raw.passes.update(pass_id, reference="R-9", idempotency_key="upd-1")
        _check(update, paths(sandbox.journal(), "/v1/pass/update"))
        assert update.parse().reference == "R-9"
        cancel = await raw.passes.cancel(pass_id, "card closed")
        _check(cancel, paths(sandbox.journal(), "/v1/pass/cancel"))
        assert cancel.parse().status == ll.PassStatus.CANCELLED

        requests = [ll.PassRequest(plan_id="esim-5gb", holder=holder()) for _ in range(3)]
        batch = await raw.passes.batch_create(requests)
        _check(batch, paths(sandbox.journal(), "/v1/pass/batch-create"))
        assert [item.ok for item in batch.parse().items] == [True, True, True]


async def test_a_replay_and_retries_show_in_the_reply() -> None:
    async with running() as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=502, times=2))
        first = await client.with_raw_response.passes.create(
            plan_id="esim-5gb", holder=holder(), idempotency_key="same"
        )
        _check(first, paths(sandbox.journal(), "/v1/pass/create"))
        again = await client.with_raw_response.passes.create(
            plan_id="esim-5gb", holder=holder(), idempotency_key="same"
        )
        _check(again, paths(sandbox.journal(), "/v1/pass/create"))
        assert (first.replayed, first.attempts) == (False, 3)
        assert (again.replayed, again.attempts) == (True, 1)
        assert again.parse().pass_id == first.parse().pass_id


async def test_the_lease_wait_is_the_time_spent_queueing_for_the_limiter() -> None:
    async with running(rate_limit=ll.RateLimit(requests=3, per=60.0)) as (_sandbox, client):
        replies = await asyncio.gather(
            *(client.with_raw_response.cards.encryption_keys() for _ in range(3))
        )
        # The token and two calls go at once; the third waits for a lease: a window and the
        # limiter's 1 s margin.
        assert sorted(round(reply.lease_wait, 1) for reply in replies) == [0.0, 0.0, 61.0]
        assert all(reply.elapsed >= reply.lease_wait for reply in replies)


async def test_concurrent_calls_each_get_their_own_reply() -> None:
    async with running() as (sandbox, client):
        created = [
            await client.passes.create(plan_id="esim-5gb", holder=holder()) for _ in range(5)
        ]
        replies = await asyncio.gather(
            *(client.with_raw_response.passes.status(p.pass_id) for p in created)
        )
        assert [r.parse().pass_id for r in replies] == [p.pass_id for p in created]
        by_id = {e.correlation_id: e for e in paths(sandbox.journal(), "/v1/pass/status")}
        assert len(by_id) == 5
        assert all(by_id[r.correlation_id].status == 200 for r in replies)
        assert not hasattr(client, "last_response")


async def test_errors_are_raised_with_their_details_as_without_raw() -> None:
    async with running(max_retries=1) as (sandbox, client):
        with pytest.raises(ll.NotFoundError) as missing:
            await client.with_raw_response.passes.status("nope")
        assert (missing.value.status, missing.value.error) == (404, "invalid_pass_id")
        assert missing.value.correlation_id == sandbox.journal()[-1].correlation_id
        sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="status", status=500))
        requests = [ll.PassRequest(plan_id="esim-5gb", holder=holder()) for _ in range(2)]
        with pytest.raises(ll.ServerError) as failed:
            await client.with_raw_response.passes.batch_create(requests)
        assert failed.value.attempts == 2
        assert failed.value.idempotency_key == sandbox.journal()[-1].idempotency_key


async def test_a_raw_batch_is_one_request_of_at_most_100() -> None:
    async with running() as (sandbox, client):
        requests = [ll.PassRequest(plan_id="esim-5gb", holder=holder()) for _ in range(101)]
        with pytest.raises(ll.ValidationError) as caught:
            await client.with_raw_response.passes.batch_create(requests)
        assert caught.value.errors == {
            "requests": "must be at most 100 with with_raw_response (one HTTP request); "
            "passes.batch_create takes any number"
        }
        assert sandbox.journal() == []


@pytest.fixture
def sandbox_thread() -> Iterator[SandboxThread]:
    with SandboxThread(SandboxConfig(rate_key="off", seed=1)) as server:
        yield server


@pytest.mark.looptime(False)
def test_the_sync_client_returns_the_same_replies(sandbox_thread: SandboxThread) -> None:
    with ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox_thread.base_url) as client:
        raw = client.with_raw_response
        assert type(raw.passes).__name__ == "PassesWithRawResponse"
        token = raw.cards.tokenize(card(), plan_id="pp-gold")
        created = raw.passes.create(
            plan_id="pp-gold", enrol_token=token.parse().enrol_token, holder=holder()
        )
        status = raw.passes.status(created.parse().pass_id)
        _check(status, paths(sandbox_thread.journal(), "/v1/pass/status"))
        assert status.parse() == client.passes.status(created.parse().pass_id)
        assert raw.cards.encryption_keys().parse() == client.cards.encryption_keys()
        with pytest.raises(ll.NotFoundError):
            raw.passes.cancel("nope")
