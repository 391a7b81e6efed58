"""The batch enrollment engine behind ``client.enroll()``.

Records stream through three stages joined by bounded queues, so memory stays flat however long
the input is: a reader (validate locally, refuse duplicates, ask the checkpoint where each
record stands), tokenizers (one request per card: the real bottleneck), and a batcher that packs
enrol tokens into full batch-create chunks as they arrive. The consumer sets the pace of the
last step: a batch-create is sent only when every outcome it makes has room to be handed out,
so the passes made and not yet taken by the consumer stay few (see :class:`_Outcomes`). Each
record's create carries a deterministic idempotency key and is recorded in the checkpoint
before it is sent, so a rerun after a crash replays it instead of making a second pass. What a
rerun does with each record is decided here, from what happened to it, and handed to the
checkpoint as an :class:`EnrollProgress`: every checkpoint (in memory, the CLI's file, a user's
database) follows the same rules because it only stores them.

An error that is no one record's (the checkpoint, the record source, a bug) stops the job: the
stages are cancelled, the outcomes already recorded are handed out, then the consumer gets an
:class:`EnrollmentError` with the error as its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any

import attrs

from .._cardmath import mask_card
from .._enroll_models import (
    EnrollCheckpoint,
    EnrollOutcome,
    EnrollProgress,
    EnrollRecord,
    Status,
    enrollment_key,
    next_enrollment_key,
    record_key,
)
from .._errors import (
    APIStatusError,
    BadRequestError,
    DuplicateRecordError,
    EnrollmentError,
    IdempotencyKeyReusedError,
    LoyaltyLayerError,
    ValidationError,
)
from .._models import PassRequest
from .._ratelimit import Limiter
from .._rules import MAX_BATCH
from .._seen import SeenKeys
from .._transport import calls_as
from ._records import each_record
from ._resources import AsyncCards, AsyncPasses

__all__ = ["run_enrollment"]

RecordSource = (
    Iterable[EnrollRecord | Mapping[str, str]] | AsyncIterable[EnrollRecord | Mapping[str, str]]
)

_WAKE = object()
_MAX_LOOK_AHEAD = 1_000
_TOKEN_SAFETY = dt.timedelta(seconds=60)


class _Ramp:
    """Spreads a job's first window of tokenize requests evenly across the window.

    A lease frees up one window after its reply, so the shape of the first window's traffic
    repeats in every later window. Sent as a burst, those requests queue behind one another at
    the server, and any pause there or here (a garbage collection, a batch being built) delays
    every request behind it, window after window. Spread at the budget's own pace, each window
    is a steady stream that a pause barely touches. A job that fits in one window is not spread:
    it finishes sooner as a burst, and there is no later window to repeat its shape.

    The pace leaves room for the interactive calls the budget granted since the job began (a
    web handler's in the same process): the job takes what they leave, so its first window is
    not crowded into less than a hold, which would leave a hole in every later one.
    """

    def __init__(self, limiter: Limiter, total: int | None) -> None:
        rate = limiter.config
        self._limiter = limiter
        self._budget = 0 if rate is None else rate.requests
        # A lease frees up one hold after its reply: requests spread over one hold, not one
        # window, come back as the same steady stream in every later window.
        self._interval = 0.0 if rate is None else rate.hold / rate.requests
        self._turns = 0
        self._start = 0.0
        self._others_before = 0
        self._lifted = asyncio.Event()
        if total is not None:  # its tokenizes and batch-creates
            self.input_ended(total + math.ceil(total / MAX_BATCH))

    def look_ahead(self, total: int | None) -> int:
        """Records to read ahead, so a job that fits in one window is known before it is spread:
        none when the caller said how many there are.

        Capped, so memory stays flat under a huge budget, whose pace is too quick to matter.
        """
        return 0 if total is not None else min(self._budget, _MAX_LOOK_AHEAD)

    def input_ended(self, requests: int) -> None:
        """The whole input needs ``requests`` requests: lift the ramp if they fit."""
        if requests <= self._budget:
            self._lifted.set()

    async def wait_turn(self) -> None:
        """Wait until the job's next request is due: never ahead of the budget's pace.

        The limiter's leases free up a little slower than this pace (each is held a margin
        longer than the window), so after the first window it is they that set the pace.
        """
        turn = self._turns
        self._turns += 1
        if self._lifted.is_set() or not self._interval:
            return
        loop = asyncio.get_running_loop()
        if turn == 0:
            self._start = loop.time()
            self._others_before = self._limiter.stats.interactive_started
            return
        others = self._limiter.stats.interactive_started - self._others_before
        delay = self._start + (turn + others) * self._interval - loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._lifted.wait()


class _Outcomes:
    """The hand-over of outcomes to the consumer: bounded, and ending however the pipeline ends.

    At most ``size`` outcomes are made and not yet taken by the consumer. An outcome waits for
    room before it is put; a batch-create keeps room for the outcomes of all its records before
    it is sent (:meth:`promise`), so the passes it makes can always be handed out. A consumer
    that stops taking outcomes stops the creates: at most ``size`` passes were made that it was
    not handed (each recorded in the checkpoint, with its pass id, before it was put).

    The end is marked from the pipeline task's done callback, so neither a failed stage nor a
    cancellation can leave the consumer waiting on an empty queue.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: asyncio.Queue[EnrollOutcome | None] = asyncio.Queue()
        self._promised = 0
        self._taken = asyncio.Condition()

    def _room(self) -> int:
        return self._size - self._queue.qsize() - self._promised

    async def promise(self, count: int) -> None:
        """Wait until ``count`` more outcomes have room, and keep it for them."""
        async with self._taken:
            await self._taken.wait_for(lambda: self._room() >= count)
        self._promised += count

    async def put(self, outcome: EnrollOutcome, *, promised: bool = False) -> None:
        """Hand ``outcome`` over, in room kept for it or, unless ``promised``, when there is."""
        if promised:
            self._promised -= 1
        else:
            async with self._taken:
                await self._taken.wait_for(lambda: self._room() >= 1)
        self._queue.put_nowait(outcome)

    async def unpromise(self) -> None:
        """Give back the room kept for one outcome that its batch-create did not make."""
        async with self._taken:
            self._promised -= 1
            self._taken.notify_all()

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def get(self) -> EnrollOutcome | None:
        """The next outcome, or ``None`` once the pipeline has ended and all are handed out."""
        outcome = await self._queue.get()
        async with self._taken:
            self._taken.notify_all()
        return outcome


@attrs.define(kw_only=True)
class _Work:
    index: int
    record: EnrollRecord
    idempotency_key: str
    enrol_token: str | None = attrs.field(default=None, repr=False)
    token_expires_at: dt.datetime | None = None
    attempts: int = 0
    retokenized: bool = False


def _refused(error: LoyaltyLayerError) -> bool:
    """The server answered the create with a refusal, so it made no pass under its key."""
    return (
        isinstance(error, APIStatusError)
        and 400 <= error.status < 500
        and not error.retryable
        and not isinstance(error, IdempotencyKeyReusedError)
    )


def _token_was_refused(error: LoyaltyLayerError | None) -> bool:
    return isinstance(error, BadRequestError) and error.error == "invalid_enrol_token"


def _masked_card_of(row: object) -> str | None:
    number = row.get("card_number") if isinstance(row, Mapping) else None
    return mask_card(number) if isinstance(number, str) and number.strip() else None


class _Pipeline:
    """One run of an enrollment job: its stages, the queues between them, and its rules."""

    def __init__(
        self,
        cards: AsyncCards,
        passes: AsyncPasses,
        *,
        plan_id: str,
        job_id: str,
        checkpoint: EnrollCheckpoint | None,
        concurrency: int,
        max_wait: float,
        limiter: Limiter,
        total: int | None,
    ) -> None:
        self._cards = cards
        self._passes = passes
        self._plan_id = plan_id
        self._job_id = job_id
        self._checkpoint = checkpoint
        self._concurrency = concurrency
        self._max_wait = max_wait
        self._ramp = _Ramp(limiter, total)
        self._seen = SeenKeys()
        self.outcomes = _Outcomes(concurrency + MAX_BATCH)
        # A record is read when a tokenizer is about to take it, or further ahead when the ramp
        # must know the job's size: a caller that stops feeding records stops the job sooner.
        self._to_tokenize: asyncio.Queue[_Work | None] = asyncio.Queue(
            max(1, self._ramp.look_ahead(total))
        )
        self._ready: asyncio.Queue[_Work | object] = asyncio.Queue()
        self._room = asyncio.Semaphore(2 * MAX_BATCH + concurrency)
        """Tokenized records waiting for, or in, the next batch: bounded, so memory is."""
        self._upstream = 0
        self._to_tokenize_total = 0
        self._resent_total = 0
        self._reader_done = False
        self._sending = 0

    async def run(self, records: RecordSource) -> None:
        # Every request of the job is a batch call: an interactive call of the same budget
        # (a web handler's) takes the next free lease ahead of it. This runs in a task of its
        # own, so the consumer's calls stay as they are.
        try:
            with calls_as("batch"):
                await self._run_stages(records)
        except BaseExceptionGroup as failure:
            # The first stage to fail has the cause; any other that failed before it could be
            # cancelled mostly met the same one.
            cause = failure.exceptions[0]
            raise EnrollmentError(
                f"the enrollment job stopped: {type(cause).__name__}: {cause}"
            ) from cause

    async def _run_stages(self, records: RecordSource) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(records))
            for _ in range(self._concurrency):
                group.create_task(self._tokenizer())
            group.create_task(self._batcher(group))

    def _changed(self) -> None:
        self._ready.put_nowait(_WAKE)

    def _nothing_more_coming(self) -> bool:
        return self._reader_done and self._upstream == 0 and self._sending == 0

    async def _read(self, records: RecordSource) -> None:
        index = 0
        async with contextlib.aclosing(each_record(records)) as each:
            async for record in each:
                await self._admit(index, record)
                index += 1
        self._reader_done = True
        batches = math.ceil((self._to_tokenize_total + self._resent_total) / MAX_BATCH)
        self._ramp.input_ended(self._to_tokenize_total + batches)
        for _ in range(self._concurrency):
            await self._to_tokenize.put(None)
        self._changed()

    async def _admit(self, index: int, raw: object) -> None:
        if isinstance(raw, EnrollRecord):
            record = raw
        else:
            try:
                record = EnrollRecord.from_row(raw)  # type: ignore[arg-type]
            except ValidationError as error:
                key = record_key(raw) if isinstance(raw, Mapping) else f"index-{index}"
                self._seen.first_seen(key, index)
                await self.outcomes.put(
                    EnrollOutcome(
                        index=index,
                        key=key,
                        status="failed",
                        error=error,
                        card=_masked_card_of(raw),
                    )
                )
                return
        first = self._seen.first_seen(record.key, index)
        if first != index:
            await self.outcomes.put(
                EnrollOutcome(
                    index=index,
                    key=record.key,
                    status="failed",
                    error=DuplicateRecordError(first_index=first),
                    card=record.card.masked,
                )
            )
            return
        progress = await self._recall(record.key)
        if progress is not None and progress.step == "done":
            await self.outcomes.put(
                EnrollOutcome(
                    index=index,
                    key=record.key,
                    status="skipped",
                    card=record.card.masked,
                    pass_id=progress.pass_id,
                )
            )
            return
        if progress is not None and progress.step == "send":
            assert progress.idempotency_key is not None
            work = _Work(
                index=index,
                record=record,
                idempotency_key=progress.idempotency_key,
                enrol_token=progress.enrol_token,
                token_expires_at=progress.token_expires_at,
            )
            self._resent_total += 1
            await self._room.acquire()
            self._ready.put_nowait(work)
            return
        if progress is None:
            key = enrollment_key(self._job_id, self._plan_id, record.key)
        else:
            assert progress.idempotency_key is not None
            key = progress.idempotency_key
        self._upstream += 1
        self._to_tokenize_total += 1
        await self._to_tokenize.put(_Work(index=index, record=record, idempotency_key=key))

    async def _recall(self, key: str) -> EnrollProgress | None:
        if self._checkpoint is None:
            return None
        progress = await self._checkpoint.recall(key)
        if progress is not None and (
            not isinstance(progress, EnrollProgress) or progress.key != key
        ):
            raise TypeError("checkpoint.recall(key) must return that key's EnrollProgress, or None")
        return progress

    def _outcome(self, work: _Work, status: Status, **details: Any) -> EnrollOutcome:
        return EnrollOutcome(
            index=work.index,
            key=work.record.key,
            status=status,
            idempotency_key=work.idempotency_key,
            card=work.record.card.masked,
            attempts=work.attempts,
            **details,
        )

    async def _finish(
        self,
        work: _Work,
        status: Status,
        progress: EnrollProgress | None,
        *,
        promised: bool = False,
        **details: Any,
    ) -> None:
        """Record the record's outcome (``None``: it is done), then hand it out (in room kept
        for it if ``promised``)."""
        outcome = self._outcome(work, status, **details)
        if self._checkpoint is not None:
            if progress is None:
                progress = EnrollProgress(key=work.record.key, step="done", pass_id=outcome.pass_id)
            await self._checkpoint.record(outcome, progress)
        await self.outcomes.put(outcome, promised=promised)

    def _to_send(self, work: _Work, idempotency_key: str) -> EnrollProgress:
        return EnrollProgress(
            key=work.record.key,
            step="send",
            idempotency_key=idempotency_key,
            enrol_token=work.enrol_token,
            token_expires_at=work.token_expires_at,
        )

    def _after_failure(self, work: _Work, error: LoyaltyLayerError) -> EnrollProgress:
        """Where a failed record stands, so that no rerun can make it a second pass."""
        key = work.record.key
        if work.enrol_token is None:  # it failed before its create: nothing used the key
            return EnrollProgress(key=key, step="tokenize", idempotency_key=work.idempotency_key)
        if not _refused(error):  # the server may have made the pass: ask again exactly
            return self._to_send(work, work.idempotency_key)
        # The server made no pass under this key; the create goes under the next one, with a
        # fresh token if the token was what it refused (else the row may have been fixed since).
        next_key = next_enrollment_key(work.idempotency_key)
        if _token_was_refused(error):
            return EnrollProgress(key=key, step="tokenize", idempotency_key=next_key)
        return self._to_send(work, next_key)

    async def _tokenizer(self) -> None:
        while (work := await self._to_tokenize.get()) is not None:
            try:
                await self._ramp.wait_turn()
                await self._tokenize(work)
            finally:
                self._upstream -= 1
                self._changed()

    async def _tokenize(self, work: _Work) -> None:
        try:
            token = await self._cards.tokenize(work.record.card, self._plan_id)
        except LoyaltyLayerError as error:
            work.attempts += getattr(error, "attempts", 1)
            await self._fail(work, error)
            return
        work.attempts += 1
        work.enrol_token = token.enrol_token
        work.token_expires_at = token.expires_at
        if self._checkpoint is not None:
            sending = self._to_send(work, work.idempotency_key)
            await self._checkpoint.record(self._outcome(work, "pending"), sending)
        await self._room.acquire()
        self._ready.put_nowait(work)

    async def _fail(self, work: _Work, error: LoyaltyLayerError, *, promised: bool = False) -> None:
        progress = self._after_failure(work, error)
        await self._finish(work, "failed", progress, promised=promised, error=error)

    async def _batcher(self, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Work] = []
        flush_at = 0.0
        senders = asyncio.Semaphore(4)
        while True:
            drained = self._nothing_more_coming() and self._ready.empty()
            if batch and (len(batch) == MAX_BATCH or drained or loop.time() >= flush_at):
                await self.outcomes.promise(len(batch))
                await senders.acquire()
                self._sending += 1
                group.create_task(self._send(batch, senders, group))
                for _ in batch:
                    self._room.release()
                batch = []
                continue
            if not batch and drained:
                return
            try:
                # Not wait_for: on Python 3.11 it drops a cancellation that comes as the wait ends.
                async with asyncio.timeout_at(flush_at if batch else None):
                    item = await self._ready.get()
            except TimeoutError:
                continue
            if isinstance(item, _Work):
                if not batch:
                    flush_at = loop.time() + self._flush_delay(item)
                batch.append(item)

    def _flush_delay(self, work: _Work) -> float:
        """How long the first token of a chunk may wait for the chunk to fill."""
        if work.token_expires_at is None:
            return self._max_wait
        left = (work.token_expires_at - _TOKEN_SAFETY - dt.datetime.now(dt.UTC)).total_seconds()
        return max(0.0, min(self._max_wait, left))

    async def _send(
        self, batch: list[_Work], senders: asyncio.Semaphore, group: asyncio.TaskGroup
    ) -> None:
        try:
            sendable: list[_Work] = []
            requests: list[PassRequest] = []
            for work in batch:
                try:
                    requests.append(self._request_for(work))
                except ValidationError as error:  # e.g. metadata of a record made in code
                    await self._fail(work, error, promised=True)
                else:
                    sendable.append(work)
            if not requests:
                return
            result = await self._passes.batch_create(requests)
            for work, item in zip(sendable, result.items, strict=True):
                work.attempts += 1
                if item.pass_ is not None:
                    await self._finish(
                        work,
                        "created",
                        None,
                        promised=True,
                        pass_=item.pass_,
                        pass_id=item.pass_.pass_id,
                        replayed=item.replayed,
                    )
                elif isinstance(item.error, IdempotencyKeyReusedError):
                    # The key is this job's and this record's, and the server holds a create
                    # under it with another token: an earlier run made the pass.
                    await self._finish(work, "created_earlier", None, promised=True)
                elif _token_was_refused(item.error) and not work.retokenized:
                    work.retokenized = True
                    work.idempotency_key = next_enrollment_key(work.idempotency_key)
                    work.enrol_token = work.token_expires_at = None
                    self._upstream += 1
                    await self.outcomes.unpromise()
                    group.create_task(self._to_tokenize_again(work))
                else:
                    assert item.error is not None
                    await self._fail(work, item.error, promised=True)
        finally:
            self._sending -= 1
            senders.release()
            self._changed()

    def _request_for(self, work: _Work) -> PassRequest:
        return PassRequest(
            plan_id=self._plan_id,
            holder=work.record.holder,
            enrol_token=work.enrol_token,
            reference=work.record.reference,
            metadata=work.record.metadata,
            idempotency_key=work.idempotency_key,
        )

    async def _to_tokenize_again(self, work: _Work) -> None:
        try:
            await self._tokenize(work)
        finally:
            self._upstream -= 1
            self._changed()


async def run_enrollment(
    cards: AsyncCards,
    passes: AsyncPasses,
    records: RecordSource,
    *,
    plan_id: str,
    job_id: str,
    checkpoint: EnrollCheckpoint | None,
    concurrency: int,
    max_wait: float,
    limiter: Limiter,
    total: int | None,
) -> AsyncGenerator[EnrollOutcome, None]:
    """Run the pipeline in a background task and hand its outcomes out as they come."""
    pipeline = _Pipeline(
        cards,
        passes,
        plan_id=plan_id,
        job_id=job_id,
        checkpoint=checkpoint,
        concurrency=concurrency,
        max_wait=max_wait,
        limiter=limiter,
        total=total,
    )
    runner = asyncio.create_task(pipeline.run(records))
    runner.add_done_callback(lambda _: pipeline.outcomes.end())
    try:
        while (outcome := await pipeline.outcomes.get()) is not None:
            yield outcome
        await runner
    finally:
        if not runner.done():
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
