"""The enrollment engine: full batches, one outcome per record, no second pass on a rerun."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import gc
import itertools
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import attrs
import pytest
from sdk_env import paths, running

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, SandboxConfig

pytestmark = pytest.mark.looptime


def rows(count: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {
            "card_number": "4242424242424242",
            "card_expiry": "10/37",
            "name_on_card": f"HOLDER {i}",
            "cvv": "321",
            "first_name": "Holder",
            "last_name": f"N{i}",
            "email": f"holder{i}@example.com",
            "country": "gb",
            "reference": f"ref-{i}",
        }
        for i in range(start, start + count)
    ]


async def collect(
    client: ll.AsyncLoyaltyLayer, records: Any, **options: Any
) -> list[ll.EnrollOutcome]:
    return [outcome async for outcome in client.enroll(records, plan_id="pp-gold", **options)]


async def test_enroll_packs_full_batches_and_reports_every_record() -> None:
    bad = [
        {**rows(1, 900)[0], "card_number": "4242424242424241", "reference": "bad-luhn"},
        {**rows(1, 901)[0], "card_expiry": "01/21", "reference": "expired"},
        {**rows(1, 902)[0], "email": "nope", "reference": "bad-email"},
    ]
    async with running() as (sandbox, client):
        started = asyncio.get_running_loop().time()
        outcomes = await collect(client, [*rows(120), *bad, *rows(130, 120)], job_id="job-1")
        elapsed = asyncio.get_running_loop().time() - started
        assert Counter(o.status for o in outcomes) == {"created": 250, "failed": 3}
        assert sorted(o.index for o in outcomes) == list(range(253))
        failures = {
            o.key: o.error.errors for o in outcomes if isinstance(o.error, ll.ValidationError)
        }
        assert failures == {
            "bad-luhn": {"card_number": "fails the Luhn check"},
            "expired": {"card_expiry": "is in the past"},
            "bad-email": {"email": "must be an email address"},
        }
        created = [o for o in outcomes if o.status == "created"]
        assert all(isinstance(o.pass_, ll.PriorityPass) for o in created)
        assert {o.pass_.reference for o in created if o.pass_} == {f"ref-{i}" for i in range(250)}
        assert all(o.card == "**** 4242" and o.attempts == 2 for o in created)
        journal = sandbox.journal()
        assert Counter(e.path for e in journal) == {
            "/auth/token": 1,
            "/v1/card/encryption-keys": 1,
            "/v1/card/tokenize": 250,
            "/v1/pass/batch-create": 3,
        }
        assert sorted(e.batch_size or 0 for e in paths(journal, "/v1/pass/batch-create")) == [
            50,
            100,
            100,
        ]
        assert [e for e in journal if e.status == 429] == []
        assert len(sandbox.passes()) == 250
        # Longer than one window, so spread at the budget's pace: 255 requests at 100 per 60 s.
        assert 255 * 0.6 <= elapsed <= 255 * 0.6 + 2.0


async def test_idempotency_keys_are_deterministic_per_job_and_record() -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        first = await collect(client, rows(3), job_id="job-A")
        keys = {o.key: o.idempotency_key for o in first}
        assert keys == {
            f"ref-{i}": ll._enroll_models.enrollment_key("job-A", "pp-gold", f"ref-{i}")
            for i in range(3)
        }
        batch = paths(sandbox.journal(), "/v1/pass/batch-create")[0]
        assert set(batch.item_keys or ()) == set(keys.values())


async def test_rerun_skips_done_records() -> None:
    checkpoint = ll.MemoryCheckpoint()
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        await collect(client, rows(5), job_id="j", checkpoint=checkpoint)
        second = await collect(client, rows(7), job_id="j", checkpoint=checkpoint)
        assert Counter(o.status for o in second) == {"skipped": 5, "created": 2}
        assert len(sandbox.passes()) == 7


async def test_a_lost_batch_reply_is_replayed_by_the_rerun_not_repeated() -> None:
    checkpoint = ll.MemoryCheckpoint()
    config = SandboxConfig(rate_key="off")
    async with running(config, max_retries=0) as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="commit_then_drop", times=1))
        first = await collect(client, rows(40), job_id="j", checkpoint=checkpoint)
        assert Counter(o.status for o in first) == {"failed": 40}
        assert all(o.retryable and isinstance(o.error, ll.APIConnectionError) for o in first)
        assert len(sandbox.passes()) == 40
        second = await collect(client, rows(40), job_id="j", checkpoint=checkpoint)
        assert Counter(o.status for o in second) == {"created": 40}
        assert all(o.replayed for o in second)
        assert len(sandbox.passes()) == 40
        assert len(paths(sandbox.journal(), "/v1/card/tokenize")) == 40


async def test_a_rerun_with_expired_tokens_retokenizes_under_a_new_key() -> None:
    checkpoint = ll.MemoryCheckpoint()
    config = SandboxConfig(rate_key="off", enrol_token_ttl=900.0)
    async with running(config, max_retries=0) as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="reset", times=1))
        first = await collect(client, rows(10), job_id="j", checkpoint=checkpoint)
        assert Counter(o.status for o in first) == {"failed": 10}
        assert sandbox.passes() == []
        sandbox.clock.advance(1000.0)
        second = await collect(client, rows(10), job_id="j", checkpoint=checkpoint)
        assert Counter(o.status for o in second) == {"created": 10}
        assert all(o.idempotency_key and o.idempotency_key.endswith(".2") for o in second)
        assert len(sandbox.passes()) == 10
        assert len(paths(sandbox.journal(), "/v1/card/tokenize")) == 20


async def test_transient_faults_during_a_job_leave_no_duplicate_and_no_loss() -> None:
    async with running(SandboxConfig(rate_key="off", seed=3), rate_limit=None) as (sandbox, client):
        for status in (500, 502, 504):
            sandbox.add_fault(Fault(route="*", kind="status", status=status, probability=0.04))
        sandbox.add_fault(Fault(route="*", kind="reset", probability=0.03))
        sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="commit_then_drop", times=2))
        outcomes = await collect(client, rows(400), job_id="chaos", concurrency=16)
        assert Counter(o.status for o in outcomes) == {"created": 400}
        references = [p["reference"] for p in sandbox.passes()]
        assert sorted(references) == sorted(f"ref-{i}" for i in range(400))


async def test_an_abandoned_enrollment_stops_cleanly() -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        async for outcome in client.enroll(rows(300), plan_id="pp-gold", job_id="j"):
            assert outcome.status == "created"
            break
        created = len(sandbox.passes())
        await asyncio.sleep(5.0)
        assert len(sandbox.passes()) == created
        assert created == 100


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_consumer_that_pauses_holds_back_the_creates(concurrency: int) -> None:
    checkpoint = ll.MemoryCheckpoint()
    async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (sandbox, client):
        outcomes = client.enroll(
            rows(400), plan_id="pp-gold", job_id="j", checkpoint=checkpoint, concurrency=concurrency
        )
        first = await anext(outcomes)
        await asyncio.sleep(60.0)  # the consumer is busy elsewhere: the job must wait for it
        # One batch's outcomes had room; the next batch does not until the consumer takes them.
        assert len(sandbox.passes()) == 100
        seen = [first]
        async for outcome in outcomes:
            seen.append(outcome)
            if len(seen) == 150:
                await asyncio.sleep(60.0)
        assert len(sandbox.passes()) == 400
        assert Counter(o.status for o in seen) == {"created": 400}
        passes = {p["reference"]: p["pass_id"] for p in sandbox.passes()}
        assert {o.key: o.pass_id for o in seen} == passes
        assert all(o.pass_ is not None and o.pass_id == o.pass_.pass_id for o in seen)


async def test_passes_made_after_the_consumer_left_are_reported_by_the_rerun() -> None:
    checkpoint = ll.MemoryCheckpoint()
    async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (sandbox, client):
        handed: dict[str, str | None] = {}
        async with aclosing(
            client.enroll(rows(400), plan_id="pp-gold", job_id="j", checkpoint=checkpoint)
        ) as outcomes:
            async for outcome in outcomes:
                handed[outcome.key] = outcome.pass_id
                if len(handed) == 30:
                    break  # e.g. the consumer's own database write failed
        made = {p["reference"]: p["pass_id"] for p in sandbox.passes()}
        assert len(made) <= 30 + 8 + 100  # never more than the hand-over holds

        rerun = await collect(client, rows(400), job_id="j", checkpoint=checkpoint)

        skipped = {o.key: o.pass_id for o in rerun if o.status == "skipped"}
        assert skipped.keys() == made.keys()
        assert handed | skipped == made  # every pass made is reported, with its id
        assert Counter(o.status for o in rerun) == {
            "skipped": len(made),
            "created": 400 - len(made),
        }
        assert len(sandbox.passes()) == 400


async def test_enroll_accepts_records_and_async_sources() -> None:
    async def source() -> Any:
        for row in rows(3):
            yield ll.EnrollRecord.from_row(row)

    async with running(SandboxConfig(rate_key="off")) as (_, client):
        outcomes = await collect(client, source())
        assert Counter(o.status for o in outcomes) == {"created": 3}


class Where(ll.MemoryCheckpoint):
    """A checkpoint that notes the threads its methods run on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    async def recall(self, key: str) -> ll.EnrollProgress | None:
        self.threads.add(threading.current_thread().name)
        return await super().recall(key)

    async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
        self.threads.add(threading.current_thread().name)
        await super().record(outcome, progress)


async def test_a_plain_iterable_is_read_on_a_thread_of_its_own_and_closed_there() -> None:
    threads: list[threading.Thread] = []
    closed_on: list[threading.Thread] = []

    def source() -> Iterator[dict[str, str]]:
        try:
            for row in rows(5):
                threads.append(threading.current_thread())
                yield row
            threads.append(threading.current_thread())
        finally:
            closed_on.append(threading.current_thread())

    checkpoint = Where()
    async with running(SandboxConfig(rate_key="off")) as (_, client):
        outcomes = await collect(client, source(), checkpoint=checkpoint)
    assert Counter(o.status for o in outcomes) == {"created": 5}
    assert {t.name for t in threads} == {"loyaltylayer-records"}
    assert len({id(t) for t in threads}) == 1
    assert closed_on == threads[:1]
    assert checkpoint.threads == {threading.current_thread().name}  # the loop's: the caller's


def test_from_row_collects_every_bad_column_without_values() -> None:
    row = {"card_number": "1234", "card_expiry": "1/2", "cvv": "1", "email": "x", "phone": "12"}
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.EnrollRecord.from_row(row)
    assert excinfo.value.errors == {
        "card_number": "must be 12 to 19 digits",
        "card_expiry": "must be MM/YY",
        "name_on_card": "must be 1 to 128 characters",
        "cvv": "must be 3 or 4 digits",
        "first_name": "must be 1 to 64 characters",
        "last_name": "must be 1 to 64 characters",
        "email": "must be an email address",
        "phone": "must be an E.164 number such as +442071234567",
    }


def test_rows_without_reference_get_a_content_key_without_the_pan() -> None:
    row = rows(1)[0] | {"reference": ""}
    record = ll.EnrollRecord.from_row(row)
    assert record.key.startswith("row_")
    assert record.key == ll.EnrollRecord.from_row(dict(row)).key
    other = ll.EnrollRecord.from_row(row | {"email": "other@example.com"})
    assert other.key != record.key


async def test_closing_after_an_early_break_returns_promptly() -> None:
    invalid = [{"card_number": "1", "first_name": "A"}] * 300
    async with running(SandboxConfig(rate_key="off")) as (_, client):

        async def consume() -> str:
            async with aclosing(client.enroll(invalid, plan_id="pp-gold")) as outcomes:
                async for outcome in outcomes:
                    await asyncio.sleep(0.01)
                    return outcome.status
            return "none"

        assert await asyncio.wait_for(consume(), 5.0) == "failed"


async def test_cancelling_a_running_enrollment_completes() -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        sandbox.add_fault(Fault(route="/v1/card/tokenize", kind="latency", latency=0.5))
        seen: list[str] = []

        async def consume() -> None:
            async for outcome in client.enroll(rows(100), plan_id="pp-gold"):
                seen.append(outcome.status)

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        assert done == {task}
        assert task.cancelled()
        assert sandbox.passes() == []


async def still_open(records: list[dict[str, str]]) -> AsyncIterator[dict[str, str]]:
    """The records of an input that has not ended yet."""
    for record in records:
        yield record
    await asyncio.Event().wait()


def enrollment_tasks() -> list[asyncio.Task[Any]]:
    """The engine's tasks still on the loop: its runner and the stages it runs."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("_Pipeline.")
    ]


@pytest.mark.parametrize("concurrency", [1, 8, 32])
async def test_closing_after_the_first_outcome_stops_every_task_and_keeps_the_checkpoint(
    concurrency: int, recwarn: pytest.WarningsRecorder
) -> None:
    # Batch-creates are slow, so when the first 100 records' reply comes, the other 50 are
    # tokenized and wait in the next batch, whose input has not ended; the reply that hands out
    # the first outcome also wakes the batcher, just before closing cancels it.
    checkpoint = ll.MemoryCheckpoint()
    loop_errors: list[str] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: loop_errors.append(context["message"]))
    try:
        async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (sandbox, client):
            sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="latency", latency=1.0))
            outcomes = client.enroll(
                still_open(rows(150)),
                plan_id="pp-gold",
                job_id="j",
                checkpoint=checkpoint,
                concurrency=concurrency,
            )
            first = await anext(outcomes)
            closing = loop.time()
            await outcomes.aclose()
            assert loop.time() - closing < 1.0
            gc.collect()
            assert enrollment_tasks() == []
            assert loop_errors == []
            assert [str(warning.message) for warning in recwarn] == []

            # Each outcome was recorded before it was handed out, and every other record before
            # its batch was sent: the rerun skips the 100 created, and sends the other 50 with
            # the enrol tokens they already have.
            assert first.status == "created"
            assert len(sandbox.passes()) == 100
            progress = [checkpoint.progress_of(f"ref-{i}") for i in range(150)]
            assert Counter(p.step for p in progress if p is not None) == {"done": 100, "send": 50}
            rerun = await collect(
                client, rows(150), job_id="j", checkpoint=checkpoint, concurrency=concurrency
            )
            assert Counter((o.status, o.replayed) for o in rerun) == {
                ("skipped", False): 100,
                ("created", False): 50,
            }
            references = sorted(p["reference"] for p in sandbox.passes())
            assert references == sorted(f"ref-{i}" for i in range(150))
            assert len(paths(sandbox.journal(), "/v1/card/tokenize")) == 150
    finally:
        loop.set_exception_handler(handler)


async def test_a_batch_that_cannot_be_built_fails_its_records_instead_of_losing_them() -> None:
    records = [ll.EnrollRecord.from_row(row) for row in rows(3)]
    too_much = {f"k{i}": "v" for i in range(21)}
    records[0] = attrs.evolve(records[0], metadata=too_much)
    async with running(SandboxConfig(rate_key="off")) as (_, client):
        outcomes = await collect(client, records, job_id="j")
        by_key = {o.key: o for o in outcomes}
        assert set(by_key) == {"ref-0", "ref-1", "ref-2"}
        assert by_key["ref-0"].status == "failed"
        assert isinstance(by_key["ref-0"].error, ll.ValidationError)
        assert set(by_key["ref-0"].error.errors) == {"metadata"}
        assert (by_key["ref-1"].status, by_key["ref-2"].status) == ("created", "created")


async def tokenize_offsets(records: int) -> list[float]:
    """When each tokenize reached a sandbox limiting 10 requests per second, from the first."""
    rate = ll.RateLimit(requests=10, per=1.0)
    config = SandboxConfig(seed=1, rate_limit=10, rate_window=1.0, window_kind="sliding")
    async with running(config, rate_limit=rate) as (sandbox, client):
        outcomes = await collect(client, rows(records))
        journal = sandbox.journal()
    assert Counter(o.status for o in outcomes) == {"created": records}
    assert [e for e in journal if e.status == 429] == []
    times = [e.time for e in paths(journal, "/v1/card/tokenize")]
    return [round(t - times[0], 3) for t in times]


async def test_a_job_longer_than_one_window_spreads_its_first_window_evenly() -> None:
    # 10 tokenizes and a batch-create: more than one window of 10 requests. The access token
    # and the encryption keys took two leases at the start, so the ninth tokenize waits for them.
    offsets = await tokenize_offsets(10)
    # One hold / requests apart: a lease is taken again one hold after it was taken.
    spacing = ll.RateLimit(requests=10, per=1.0).hold / 10
    gaps = [later - earlier for earlier, later in itertools.pairwise(offsets[:8])]
    assert gaps == pytest.approx([spacing] * 7, abs=0.005)
    assert offsets[8] >= 1.0


async def test_later_windows_repeat_the_spread_of_the_first() -> None:
    offsets = await tokenize_offsets(25)
    hold = ll.RateLimit(requests=10, per=1.0).hold
    spacing = hold / 10
    # Each lease is taken again one hold after its reply, which came at once (virtual time):
    # the two that waited for the token's and the keys' leases, then a steady stream again.
    assert offsets[18:20] == pytest.approx([t + hold for t in offsets[8:10]], abs=0.002)
    for stream in (offsets[10:18], offsets[20:25]):
        gaps = [later - earlier for earlier, later in itertools.pairwise(stream)]
        assert gaps == pytest.approx([spacing] * len(gaps), abs=0.005)


async def test_a_job_that_fits_in_one_window_goes_at_once() -> None:
    # The token, the keys, 7 tokenizes and a batch-create: the 10 requests of one window.
    assert await tokenize_offsets(7) == [0.0] * 7


async def test_an_unpaced_client_does_not_spread() -> None:
    async with running(SandboxConfig(seed=1, rate_key="off"), rate_limit=None) as (sandbox, client):
        await collect(client, rows(150))
        times = [e.time for e in paths(sandbox.journal(), "/v1/card/tokenize")]
    assert max(times) - min(times) < 0.01


async def test_a_huge_budget_does_not_read_the_whole_input_ahead() -> None:
    pulled = 0

    def source() -> Iterator[dict[str, str]]:
        nonlocal pulled
        for row in rows(3000):
            pulled += 1
            yield row

    rate = ll.RateLimit(requests=1_000_000, per=1.0)
    ahead = 0
    async with running(SandboxConfig(seed=1, rate_key="off"), rate_limit=rate) as (_, client):
        async for done, _outcome in aenumerate(client.enroll(source(), plan_id="pp-gold")):
            ahead = max(ahead, pulled - done)
    assert pulled == 3000
    # At most: the look-ahead (1,000), the tokenizers, the batches filled and sent, the outcomes.
    assert ahead <= 1_000 + 8 + 3 * 100 + 8 + 100


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_told_the_total_a_job_stops_within_the_records_in_flight(concurrency: int) -> None:
    # A caller that stops feeding records (the CLI on Ctrl-C) ends the job once what is in
    # flight is done: records read ahead would all be tokenized and created first.
    stopped = False
    pulled = 0

    async def source() -> AsyncIterator[dict[str, str]]:
        nonlocal pulled
        for row in rows(400):
            if stopped:
                return
            pulled += 1
            yield row

    rate = ll.RateLimit(requests=100, per=60.0)  # 400 records do not fit: spread, 0.6 s apart
    async with running(SandboxConfig(seed=1, rate_key="off"), rate_limit=rate) as (sandbox, client):
        job = asyncio.create_task(
            collect(client, source(), total=400, concurrency=concurrency, job_id="j")
        )
        await asyncio.sleep(6.0)
        stopped = True
        tokenizing = len(paths(sandbox.journal(), "/v1/card/tokenize"))
        outcomes = await job
        journal = sandbox.journal()

    assert 5 <= tokenizing <= 11
    # In flight: a record in each tokenizer, one queued for them, one the reader holds.
    assert pulled <= tokenizing + concurrency + 2
    assert len(outcomes) == pulled
    assert Counter(o.status for o in outcomes) == {"created": pulled}
    assert len(paths(journal, "/v1/card/tokenize")) == pulled


async def test_a_total_that_is_not_a_count_is_refused() -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        for total in (-1, 2.5, True, "3"):
            with pytest.raises(ll.ValidationError) as caught:
                await collect(client, rows(1), total=total)
            assert caught.value.errors == {"total": "must be a whole number, 0 or more"}
        assert sandbox.journal() == []


async def aenumerate(items: AsyncIterator[ll.EnrollOutcome]) -> AsyncIterator[tuple[int, Any]]:
    count = 0
    async for item in items:
        yield count, item
        count += 1


# --- an error that is no one record's stops the job, loudly and promptly ---------------------


class FullDisk(ll.MemoryCheckpoint):
    """A checkpoint with room for ``room`` more rows, then the disk is full."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.failed_at: float | None = None

    async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
        if self.room == 0:
            self.failed_at = asyncio.get_running_loop().time()
            raise OSError(errno.ENOSPC, "No space left on device", "progress.db")
        self.room -= 1
        await super().record(outcome, progress)


async def test_a_checkpoint_that_cannot_write_stops_the_job_within_a_second() -> None:
    checkpoint = FullDisk(room=150)
    async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (sandbox, client):
        seen: list[ll.EnrollOutcome] = []

        async def consume() -> None:
            async for outcome in client.enroll(
                rows(300), plan_id="pp-gold", job_id="j", checkpoint=checkpoint
            ):
                seen.append(outcome)

        async with asyncio.timeout(10.0):
            with pytest.raises(ll.EnrollmentError) as caught:
                await consume()
        stopped_at = asyncio.get_running_loop().time()
        assert checkpoint.failed_at is not None
        assert stopped_at - checkpoint.failed_at < 1.0
        cause = caught.value.__cause__
        assert isinstance(cause, OSError)
        assert (cause.errno, cause.filename) == (errno.ENOSPC, "progress.db")
        assert str(caught.value).startswith("the enrollment job stopped: OSError: ")
        gc.collect()
        assert enrollment_tasks() == []
        # What was handed out was recorded first; freed, the rerun makes no second pass.
        assert all(checkpoint.progress_of(o.key) is not None for o in seen)
        checkpoint.room = 10_000
        rerun = await collect(client, rows(300), job_id="j", checkpoint=checkpoint)
        assert {o.status for o in rerun} <= {"skipped", "created"}
        references = sorted(p["reference"] for p in sandbox.passes())
        assert references == sorted(f"ref-{i}" for i in range(300))


async def test_a_failing_record_source_stops_the_job_with_its_error() -> None:
    def source() -> Iterator[dict[str, str]]:
        yield from rows(120)
        raise KeyError("the export broke")

    async with running(SandboxConfig(rate_key="off"), rate_limit=None) as (_, client):
        # A hang guard in virtual time, which moves on to it while the records thread is slow.
        async with asyncio.timeout(30.0):
            with pytest.raises(ll.EnrollmentError) as caught:
                await collect(client, source(), job_id="j")
        assert isinstance(caught.value.__cause__, KeyError)
        gc.collect()
        assert enrollment_tasks() == []


class Recalls(ll.EnrollCheckpoint):
    """A user's checkpoint that hands back whatever ``answer`` makes of a key."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def recall(self, key: str) -> ll.EnrollProgress | None:
        return self.answer(key)  # type: ignore[no-any-return]

    async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
        return None


def naive_progress(key: str) -> ll.EnrollProgress:
    return ll.EnrollProgress(
        key=key,
        step="send",
        idempotency_key=ll._enroll_models.enrollment_key("j", "pp-gold", key),
        enrol_token="etk_1",
        token_expires_at=dt.datetime(2026, 12, 2, 7, 24, 10),
    )


@pytest.mark.parametrize(
    ("answer", "cause", "message"),
    [
        (naive_progress, ll.ValidationError, "token_expires_at: must have a UTC offset"),
        (lambda key: {"step": "done"}, TypeError, "must return that key's EnrollProgress"),
        (
            lambda key: ll.EnrollProgress(key="other", step="done"),
            TypeError,
            "must return that key's EnrollProgress",
        ),
    ],
)
async def test_a_checkpoint_that_recalls_nonsense_stops_the_job_before_sending(
    answer: Any, cause: type[Exception], message: str
) -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        async with asyncio.timeout(30.0):
            with pytest.raises(ll.EnrollmentError) as caught:
                await collect(client, rows(5), job_id="j", checkpoint=Recalls(answer))
        assert isinstance(caught.value.__cause__, cause)
        assert message in str(caught.value)
        assert [e.path for e in sandbox.journal()] == []


async def test_an_unexpected_error_inside_the_engine_reaches_the_consumer() -> None:
    class Broken(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("a bug")

    async with running(SandboxConfig(rate_key="off")) as (_, client):
        async with asyncio.timeout(30.0):
            with pytest.raises(ll.EnrollmentError) as caught:
                await collect(client, [*rows(2), Broken()], job_id="j")
        assert isinstance(caught.value.__cause__, RuntimeError)


# --- records refused before any request --------------------------------------------------------


async def test_duplicate_records_are_reported_as_duplicates_of_the_earlier_index() -> None:
    records = [*rows(3), rows(1)[0] | {"email": "other@example.com"}, *rows(1, 3)]
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        outcomes = {o.index: o for o in await collect(client, records, job_id="j")}
        duplicate = outcomes[3]
        assert duplicate.status == "failed"
        assert isinstance(duplicate.error, ll.DuplicateRecordError)
        assert duplicate.error.first_index == 0
        assert duplicate.error.errors == {"key": "duplicates the record at index 0"}
        assert duplicate.key == "ref-0"
        assert not any(isinstance(o.error, ll.IdempotencyKeyReusedError) for o in outcomes.values())
        assert sorted(p["reference"] for p in sandbox.passes()) == [f"ref-{i}" for i in range(4)]
        assert len(paths(sandbox.journal(), "/v1/card/tokenize")) == 4


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        ({"first_name": "Gr\x00ace"}, {"first_name": "must not contain control characters"}),
        ({"email": "a@example.com\r\nBcc: x"}, {"email": "must not contain control characters"}),
        (
            {"reference": "4242 4242 4242 4242"},
            {"reference": "looks like a card number: give the record another reference"},
        ),
    ],
)
async def test_bad_fields_are_refused_before_any_request(
    change: dict[str, str], errors: dict[str, str]
) -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        [outcome] = await collect(client, [rows(1)[0] | change], job_id="j")
        assert isinstance(outcome.error, ll.ValidationError)
        assert outcome.error.errors == errors
        assert "4242 4242" not in outcome.key
        assert sandbox.journal() == []


def test_a_record_keyed_by_a_card_number_is_refused() -> None:
    record = ll.EnrollRecord.from_row(rows(1)[0])
    with pytest.raises(ll.ValidationError) as caught:
        attrs.evolve(record, key="4242424242424242", reference="4242424242424242")
    assert caught.value.errors == {
        "key": "looks like a card number: keys are written in clear",
        "reference": "looks like a card number: give the record another reference",
    }


# --- the rules every checkpoint follows -------------------------------------------------------


async def test_a_lost_checkpoint_with_the_same_job_id_ends_as_created_earlier() -> None:
    async with running(SandboxConfig(rate_key="off")) as (sandbox, client):
        await collect(client, rows(5), job_id="j", checkpoint=ll.MemoryCheckpoint())
        lost = ll.MemoryCheckpoint()
        again = await collect(client, rows(6), job_id="j", checkpoint=lost)
        assert Counter(o.status for o in again) == {"created_earlier": 5, "created": 1}
        assert all(o.pass_ is None for o in again if o.status == "created_earlier")
        assert {lost.progress_of(f"ref-{i}").step for i in range(6)} == {"done"}  # type: ignore[union-attr]
        assert len(sandbox.passes()) == 6


async def test_a_refused_create_goes_under_the_next_key_with_the_same_token() -> None:
    checkpoint = ll.MemoryCheckpoint()
    refusal = {"error": "invalid_request", "error_description": "Try again", "fields": {}}
    async with running(SandboxConfig(rate_key="off"), max_retries=0) as (sandbox, client):
        sandbox.add_fault(
            Fault(route="/v1/pass/batch-create", kind="status", status=400, body=refusal, times=1)
        )
        first = await collect(client, rows(3), job_id="j", checkpoint=checkpoint)
        assert {type(o.error) for o in first} == {ll.BadRequestError}
        for outcome in first:
            progress = checkpoint.progress_of(outcome.key)
            assert progress is not None
            assert progress.step == "send"
            assert progress.idempotency_key == f"{outcome.idempotency_key}.2"
        second = await collect(client, rows(3), job_id="j", checkpoint=checkpoint)
        assert {(o.status, (o.idempotency_key or "")[-2:]) for o in second} == {("created", ".2")}
        assert len(paths(sandbox.journal(), "/v1/card/tokenize")) == 3
        assert len(sandbox.passes()) == 3
