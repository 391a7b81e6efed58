"""The portal, in this process: its one loop thread, the deadlock guard, exceptions, contextvars,
iterators, Ctrl-C and shutdown, through small coroutines and the real client."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sandbox_process import SandboxProcess
from sdk_env import cardholder_rows
from waiting import wait_for

import loyaltylayer as ll
from loyaltylayer import _portal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    sandbox = SandboxProcess("--rate-key", "off")
    yield sandbox.url
    sandbox.close()


@pytest.fixture
def client(sandbox_url: str) -> Iterator[ll.LoyaltyLayer]:
    with ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox_url, rate_limit=None) as c:
        yield c


async def _thread_name() -> str:
    return threading.current_thread().name


def _portal_tasks() -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return _portal.call(count)


def _no_tasks_left_soon() -> bool:
    """Whether the loop runs no task within 5 s: a task that has handed out its last item still
    takes a step or two to end, and a task an earlier test left may be closing."""
    deadline = time.monotonic() + 5
    while _portal_tasks() and time.monotonic() < deadline:
        time.sleep(0.01)
    return _portal_tasks() == 0


def test_every_call_runs_on_the_one_loop_thread() -> None:
    seen: list[str] = []
    worker = threading.Thread(target=lambda: seen.append(_portal.call(_thread_name)))
    worker.start()
    worker.join()
    assert [*seen, _portal.call(_thread_name)] == [_portal.THREAD_NAME] * 2
    assert [t.name for t in threading.enumerate()].count(_portal.THREAD_NAME) == 1


def test_a_call_from_the_portal_thread_is_refused_at_once() -> None:
    async def nested() -> float:
        return _portal.call(asyncio.sleep, 0.0, 1.0)

    with pytest.raises(ll.EventLoopError, match=r"^a loyaltylayer sync method was called on the "):
        _portal.call(nested)
    assert _portal.call(asyncio.sleep, 0.0, 7) == 7  # the portal is unharmed


def test_a_call_from_a_finalizer_on_the_portal_thread_is_refused_naming_the_case() -> None:
    refusals: list[str] = []

    class CallsOnCollection:
        def __del__(self) -> None:
            try:
                _portal.call(asyncio.sleep, 0.0)
            except ll.EventLoopError as error:
                refusals.append(str(error))

    async def collect_one() -> None:
        CallsOnCollection()  # collected at once, on the portal's thread

    _portal.call(collect_one)
    assert len(refusals) == 1
    assert "a finalizer such as __del__ that ran during one" in refusals[0]


def test_the_same_exception_object_comes_back() -> None:
    original = KeyError("inner")
    raised = ValueError("outer")
    raised.__cause__ = original

    async def fail() -> None:
        raise raised

    with pytest.raises(ValueError, match="outer") as caught:
        _portal.call(fail)
    assert caught.value is raised
    assert caught.value.__cause__ is original
    frames = [frame.name for frame in caught.traceback]
    assert "test_the_same_exception_object_comes_back" in frames
    assert "fail" in frames


def _loop_thread() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == _portal.THREAD_NAME), None)


@pytest.mark.parametrize("make", [lambda: SystemExit("bad input file"), KeyboardInterrupt])
def test_system_exit_on_the_loop_reaches_its_caller_and_the_loop_runs_on(
    client: ll.LoyaltyLayer, make: Callable[[], BaseException]
) -> None:
    _portal.call(asyncio.sleep, 0)
    thread = _loop_thread()
    # Another thread's call is in flight meanwhile: it must not notice.
    neighbour: list[int] = []
    worker = threading.Thread(target=lambda: neighbour.append(_portal.call(asyncio.sleep, 0.3, 7)))
    worker.start()

    raised = make()

    async def user_code() -> None:
        raise raised

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - the very object is checked
        _portal.call(user_code)
    assert caught.value is raised

    # From a records source, under a task group's child task inside the enrollment engine.
    def records() -> Iterator[dict[str, str]]:
        yield {"reference": "R1"}
        raise raised

    with pytest.raises(BaseException) as caught:  # noqa: PT011
        list(client.enroll(records(), plan_id="pp-gold"))
    assert caught.value is raised

    worker.join(10)
    assert neighbour == [7]
    assert _loop_thread() is thread
    assert thread is not None
    assert thread.is_alive()
    assert client.cards.encryption_keys().keys


def _waiting_caller() -> tuple[threading.Thread, list[str]]:
    """A thread in a long call, once the call runs on the loop; the EventLoopError that ends it."""
    ended: list[str] = []
    running = threading.Event()

    async def long_call() -> None:
        running.set()
        await asyncio.sleep(30)

    def call() -> None:
        try:
            _portal.call(long_call)
        except ll.EventLoopError as error:
            ended.append(str(error))

    caller = threading.Thread(target=call)
    caller.start()
    assert running.wait(10)
    return caller, ended


def test_a_loop_thread_that_ended_is_noticed_by_its_waiters_and_replaced() -> None:
    _portal.call(asyncio.sleep, 0)
    portal = _portal._portal
    assert portal is not None
    first = portal.thread
    assert first is not None
    caller, outcome = _waiting_caller()
    portal.loop.call_soon_threadsafe(portal.loop.stop)  # the thread ends, no shutdown said so
    first.join(10)
    caller.join(10)

    assert not caller.is_alive()
    assert outcome == ["the loyaltylayer portal was shut down"]
    # A new thread, maybe with the dead one's ident, is not taken for the loop's own.
    answers: list[str] = []
    fresh = threading.Thread(target=lambda: answers.append(_portal.call(_thread_name)))
    fresh.start()
    fresh.join(10)
    assert answers == [_portal.THREAD_NAME]
    assert portal.thread is not first
    assert _no_tasks_left_soon()


def test_api_errors_keep_their_class_and_attributes(client: ll.LoyaltyLayer) -> None:
    with pytest.raises(ll.NotFoundError) as caught:
        client.passes.status("pss_nope")
    assert caught.value.status == 404
    assert caught.value.correlation_id.startswith("ll-")


def test_a_timeout_raised_by_the_coroutine_is_not_a_polling_timeout() -> None:
    error = TimeoutError("the coroutine's own")

    async def slow_then_fail() -> None:
        await asyncio.sleep(3 * _portal._POLL_INTERVAL)
        raise error

    with pytest.raises(TimeoutError) as caught:
        _portal.call(slow_then_fail)
    assert caught.value is error


def test_the_callers_contextvars_are_visible() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("req-42")

    async def read() -> str:
        return request_id.get()

    async def items() -> AsyncIterator[str]:
        yield request_id.get()

    assert _portal.call(read) == "req-42"
    assert list(_portal.iterate(None, items)) == ["req-42"]


class _Counting:
    """An async generator's record of what it produced and whether its clean-up ran."""

    def __init__(self) -> None:
        self.produced: list[int] = []
        self.finalized = threading.Event()

    async def count(self, n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                self.produced.append(i)
                yield i
        finally:
            self.finalized.set()


def test_full_iteration_and_an_early_break_run_the_generators_finally() -> None:
    counting = _Counting()
    assert list(_portal.iterate(None, counting.count, 5)) == [0, 1, 2, 3, 4]
    assert counting.finalized.is_set()

    counting = _Counting()
    for item in _portal.iterate(None, counting.count, 100):
        if item == 1:
            break
    assert counting.finalized.is_set()  # closing waited for it
    assert _no_tasks_left_soon()


def test_the_channel_is_bounded() -> None:
    counting = _Counting()
    numbers = _portal.iterate(None, counting.count, 100)
    assert next(numbers) == 0
    # The task runs ahead while the reader is idle: but only so far.
    wait_for(lambda: len(counting.produced) >= 1 + _portal._AHEAD)
    time.sleep(0.2)
    assert len(counting.produced) == 1 + _portal._AHEAD
    numbers.close()
    assert counting.finalized.is_set()


def test_an_iterator_that_cannot_start_fails_at_once() -> None:
    def refuses() -> AsyncIterator[int]:
        raise ValueError("refused")

    started = time.monotonic()
    with pytest.raises(ValueError, match="refused"):
        next(_portal.iterate(None, refuses))
    # Not after closing's wait for an end that no started task would ever send.
    assert time.monotonic() - started < _portal._CLOSE_TIMEOUT / 2
    assert _no_tasks_left_soon()


def test_an_abandoned_iterator_is_closed_when_collected() -> None:
    counting = _Counting()
    numbers = _portal.iterate(None, counting.count, 100)
    assert next(numbers) == 0
    del numbers
    gc.collect()
    assert counting.finalized.wait(5)
    assert _no_tasks_left_soon()


def test_an_iterators_exception_is_raised_as_itself() -> None:
    error = LookupError("from the generator")

    async def failing() -> AsyncIterator[int]:
        yield 1
        raise error

    seen: list[int] = []
    with pytest.raises(LookupError) as caught:
        seen.extend(_portal.iterate(None, failing))
    assert (seen, caught.value) == ([1], error)


def test_a_timeout_spanning_yields_fires_in_the_one_driver_task() -> None:
    async def ticks() -> AsyncIterator[int]:
        async with asyncio.timeout(0.3):
            for i in range(1000):
                await asyncio.sleep(0.05)
                yield i

    seen: list[int] = []
    with pytest.raises(TimeoutError):
        seen.extend(_portal.iterate(None, ticks))
    assert 1 <= len(seen) < 1000


def _cardholders(count: int) -> list[dict[str, str]]:
    """Rows no earlier test enrolled (the sandbox lives for the module)."""
    return cardholder_rows(count, prefix=f"sync-{time.monotonic_ns()}-")


def test_a_records_source_that_blocks_holds_up_no_other_threads_call(
    client: ll.LoyaltyLayer,
) -> None:
    waiting, release = threading.Event(), threading.Event()

    def slow_source() -> Iterator[dict[str, str]]:  # a paged API, a cursor, a queue
        yield from _cardholders(2)
        waiting.set()
        release.wait(10)
        yield from _cardholders(1)

    statuses: list[str] = []
    job = threading.Thread(
        target=lambda: statuses.extend(
            o.status for o in client.enroll(slow_source(), plan_id="pp-gold")
        )
    )
    job.start()
    assert waiting.wait(10)
    answered: list[int] = []
    other = threading.Thread(
        target=lambda: answered.append(len(client.cards.encryption_keys().keys))
    )
    other.start()
    other.join(5)
    blocked = other.is_alive()
    release.set()
    job.join(10)
    other.join(10)

    assert not blocked  # answered while the source was still blocked
    assert answered
    assert answered[0] >= 1
    assert statuses == ["created"] * 3


def test_the_sync_client_reads_records_and_runs_the_checkpoint_on_its_own_threads(
    client: ll.LoyaltyLayer,
) -> None:
    read_on: set[str] = set()
    checkpoint_on: set[str] = set()

    def source() -> Iterator[dict[str, str]]:
        for row in _cardholders(3):
            read_on.add(threading.current_thread().name)
            yield row

    class Where(ll.MemoryCheckpoint):
        async def recall(self, key: str) -> ll.EnrollProgress | None:
            checkpoint_on.add(threading.current_thread().name)
            return await super().recall(key)

        async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
            checkpoint_on.add(threading.current_thread().name)
            await super().record(outcome, progress)

    outcomes = list(client.enroll(source(), plan_id="pp-gold", checkpoint=Where()))

    assert [o.status for o in outcomes] == ["created"] * 3
    assert read_on == {"loyaltylayer-records"}
    assert checkpoint_on == {_portal.THREAD_NAME}


def _interrupted(run: Callable[[], object]) -> threading.Event:
    """SIGINT to this (the main) thread once ``run()`` waits on :func:`_long`; the event is set
    when that coroutine was cancelled."""
    _long_running.clear()
    _cancelled.clear()
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_once_running() -> None:
        if _long_running.wait(10):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_once_running).start()
    with pytest.raises(KeyboardInterrupt):
        run()
    return _cancelled


_long_running = threading.Event()
_cancelled = threading.Event()


async def _long() -> None:
    _long_running.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _cancelled.set()
        raise


def test_ctrl_c_interrupts_a_call_and_cancels_its_task(client: ll.LoyaltyLayer) -> None:
    assert _interrupted(lambda: _portal.call(_long)).wait(5)
    assert _no_tasks_left_soon()
    assert client.cards.encryption_keys().keys  # the next call works


def test_ctrl_c_while_a_call_is_handed_over_still_cancels_its_task() -> None:
    # Two threads contend for the GIL, so the signal often lands while the caller is still in
    # `call_soon_threadsafe`, its call already scheduled and running on the loop.
    stop = threading.Event()

    def contend() -> None:
        while not stop.is_set():
            sum(range(1000))

    contenders = [threading.Thread(target=contend) for _ in range(2)]
    for contender in contenders:
        contender.start()
    try:
        for _ in range(50):
            assert _interrupted(lambda: _portal.call(_long)).wait(5)
    finally:
        stop.set()
        for contender in contenders:
            contender.join()
    assert _no_tasks_left_soon()


def test_ctrl_c_interrupts_an_iteration_and_closes_its_generator() -> None:
    async def slow() -> AsyncIterator[None]:
        yield None
        await _long()
        yield None

    assert _interrupted(lambda: list(_portal.iterate(None, slow))).wait(5)
    assert _no_tasks_left_soon()


def test_a_collected_client_is_closed_but_not_while_its_children_are_in_use(
    sandbox_url: str,
) -> None:
    client = ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox_url, rate_limit=None)
    transport = client._async._transport
    passes = client.passes
    del client
    gc.collect()
    with pytest.raises(ll.NotFoundError):
        passes.status("pss_nope")  # its client is open: `passes` keeps it alive
    session = transport._sessions.held
    assert session is not None
    del passes
    deadline = time.monotonic() + 5
    while not session.closed and time.monotonic() < deadline:
        # Until the loop thread has let go of the call's task, the task's exception (whose
        # traceback holds the sync frames, and so `passes`) keeps the facade alive: collect again.
        gc.collect()
        time.sleep(0.01)
    assert session.closed


_background: set[asyncio.Future[None]] = set()  # the loop keeps only weak references to tasks


def test_a_task_a_call_left_running_finishes_with_no_further_call() -> None:
    finished = threading.Event()

    async def start_in_background() -> None:
        async def later() -> None:
            await asyncio.sleep(0.05)
            finished.set()

        _background.add(asyncio.ensure_future(later()))

    _portal.call(start_in_background)
    assert finished.wait(5)


def test_shutdown_stops_the_thread_and_leaves_clients_usable(client: ll.LoyaltyLayer) -> None:
    client.cards.encryption_keys()
    session = client._async._transport._sessions.held
    ll.shutdown_portal()
    assert _portal.THREAD_NAME not in [t.name for t in threading.enumerate()]
    assert client.cards.encryption_keys().keys  # the same loop, on a new thread
    assert client._async._transport._sessions.held is session
    assert [t.name for t in threading.enumerate()].count(_portal.THREAD_NAME) == 1


def test_a_client_dropped_while_the_portal_is_stopped_is_closed_when_it_starts(
    sandbox_url: str,
) -> None:
    client = ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox_url, rate_limit=None)
    client.cards.encryption_keys()
    session = client._async._transport._sessions.held
    assert session is not None
    ll.shutdown_portal()  # as a pre-fork server's parent does
    del client
    gc.collect()
    assert not session.closed

    _portal.call(asyncio.sleep, 0)  # the next sync call, of any client, starts the portal

    deadline = time.monotonic() + 5
    while not session.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.closed


def test_shutdown_ends_a_call_in_flight_with_a_clear_error() -> None:
    caller, outcome = _waiting_caller()
    ll.shutdown_portal()
    caller.join(10)
    assert outcome == ["the loyaltylayer portal was shut down during this call"]
