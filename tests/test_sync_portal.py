"""The portal, in this process: threads, the deadlock guard, exceptions, contextvars, iterators,
context managers and Ctrl-C, through the generated fixture facade and small coroutines."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import contextvars
import gc
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType

import aiohttp
import pytest
from sync_fixtures._async._client import FixtureAPIError
from sync_fixtures._sync import LoyaltyLayer
from sync_fixtures.server import Server

from loyaltylayer import _portal

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[LoyaltyLayer]:
    with LoyaltyLayer(server.url) as client:
        yield client


def _portal_tasks() -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return _portal.call(count)


def test_64_threads_share_one_loop_thread_and_one_pool(client: LoyaltyLayer) -> None:
    results: dict[tuple[int, int], str] = {}

    def work(t: int) -> None:
        for i in range(50):
            results[t, i] = client.cards.tokenize(f"t{t}", f"i{i}", idempotency_key="k")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {(t, i): f"t{t}:i{i}:None:k" for t in range(64) for i in range(50)}
    assert [t.name for t in threading.enumerate()].count(_portal.THREAD_NAME) == 1
    assert client.connections() <= 100  # aiohttp's default connector limit: the pool was shared


def _until_no_thread_runs_the_loop() -> None:
    """Wait for the loop thread to finish work an earlier test left it (closing connections
    after many threads' calls, say): until then, a call is handed to it, as it should be."""
    runtime = _portal._runtime
    assert runtime is not None
    deadline = time.monotonic() + 2
    while runtime._driver is not None or runtime._pending:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_call_runs_the_loop_in_its_own_thread_unless_another_thread_runs_it(
    client: LoyaltyLayer,
) -> None:
    async def runner() -> str:
        return threading.current_thread().name

    _until_no_thread_runs_the_loop()
    assert _portal.call(runner) == "MainThread"
    seen: list[str] = []
    worker = threading.Thread(target=lambda: seen.append(_portal.call(runner)), name="worker")
    worker.start()
    worker.join()
    assert seen == ["worker"]

    numbers = client.count(2)
    assert next(numbers) == 0  # the iterator's task lives on: the loop thread runs the loop
    assert _portal.call(runner) == _portal.THREAD_NAME
    assert list(numbers) == [1]
    deadline = time.monotonic() + 2
    while _portal.call(runner) != "MainThread":  # the loop thread stops once its work is done
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_call_from_the_portal_thread_raises_at_once() -> None:
    async def nested() -> float:
        return _portal.call(asyncio.sleep, 0.0, 1.0)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^a loyaltylayer sync method was called from code "):
        _portal.call(nested)
    assert time.monotonic() - started < 1.0


def test_a_call_from_a_finalizer_during_a_call_is_refused_naming_the_case() -> None:
    refusals: list[str] = []

    class CallsOnCollection:
        def __del__(self) -> None:
            try:
                _portal.call(asyncio.sleep, 0.0)
            except RuntimeError as error:
                refusals.append(str(error))

    async def collect_one() -> None:
        CallsOnCollection()  # collected at once, while this call runs the loop

    _portal.call(collect_one)
    assert len(refusals) == 1
    assert "a finalizer such as __del__ that ran during one" in refusals[0]
    assert _portal.call(asyncio.sleep, 0.0, 7) == 7  # the portal is unharmed


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


def test_api_errors_keep_class_attributes_and_cause(client: LoyaltyLayer) -> None:
    with pytest.raises(FixtureAPIError) as caught:
        client.passes.fail(404)
    assert caught.value.status == 404
    assert type(caught.value.__cause__).__name__ == "ClientResponseError"


def test_a_timeout_raised_by_the_coroutine_is_not_a_polling_timeout() -> None:
    error = TimeoutError("the coroutine's own")

    async def slow_then_fail() -> None:
        await asyncio.sleep(0.35)  # several polling intervals
        raise error

    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        _portal.call(slow_then_fail)
    assert caught.value is error
    assert time.monotonic() - started >= 0.35


def test_the_callers_contextvars_are_visible() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("req-42")

    async def read() -> str:
        return request_id.get()

    async def items() -> AsyncIterator[str]:
        yield request_id.get()

    assert _portal.call(read) == "req-42"
    assert list(_portal.iterate(None, items)) == ["req-42"]


def test_full_iteration_and_early_break_runs_the_generators_finally(client: LoyaltyLayer) -> None:
    assert list(client.count(3, start=5)) == [5, 6, 7]
    assert client._async.finalized == ["count"]
    for item in client.count(10):
        if item == 1:
            break
    assert client._async.finalized == ["count", "count"]
    assert client._async.yielded == [5, 6, 7, 0]
    assert _portal_tasks() == 0


def test_an_abandoned_iterator_is_closed_when_collected(client: LoyaltyLayer) -> None:
    iterator = client.count(10)
    assert next(iterator) == 0
    del iterator
    assert client._async.finalized == ["count"]
    assert _portal_tasks() == 0


def test_a_timeout_spanning_yields_fires_on_time() -> None:
    async def ticks() -> AsyncIterator[int]:
        async with asyncio.timeout(0.3):
            for i in range(100):
                await asyncio.sleep(0.05)
                yield i

    seen: list[int] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        seen.extend(_portal.iterate(None, ticks))
    assert time.monotonic() - started < 1.0
    assert 3 <= len(seen) < 10


def test_a_context_manager_enters_and_exits_in_one_task(client: LoyaltyLayer) -> None:
    with client.scope("a") as value:
        assert value == "a"
        assert client._async.finalized == ["enter a"]
    assert client._async.finalized == ["enter a", "exit a"]

    tasks: list[asyncio.Task[object] | None] = []

    @contextlib.asynccontextmanager
    async def suppressing() -> AsyncIterator[None]:
        tasks.append(asyncio.current_task())
        try:
            yield
        except ValueError:
            pass
        finally:
            tasks.append(asyncio.current_task())

    with _portal.context(None, suppressing):
        raise ValueError("suppressed by __aexit__")
    assert tasks[0] is tasks[1]
    with pytest.raises(KeyError), _portal.context(None, suppressing):
        raise KeyError("not suppressed")


def _long_call_interrupted(interrupt: Callable[[], object]) -> None:
    """``_portal.call`` of a 10 s sleep, interrupted after 0.2 s: cancelled, quickly."""
    cancelled = threading.Event()

    async def long() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    threading.Timer(0.2, interrupt).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _portal.call(long)
    assert time.monotonic() - started < 1.0
    assert cancelled.is_set()


def _sigint_to_main_thread() -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def test_ctrl_c_cancels_the_call_and_the_next_call_works(client: LoyaltyLayer) -> None:
    _long_call_interrupted(_sigint_to_main_thread)  # this thread runs the loop itself
    assert _portal_tasks() == 0
    assert client.get("/echo/after") == "after"


def test_ctrl_c_cancels_a_call_handed_to_the_loop_thread(client: LoyaltyLayer) -> None:
    numbers = client.count(3)
    assert next(numbers) == 0  # a live iterator: the loop thread runs the loop meanwhile
    _long_call_interrupted(_thread.interrupt_main)
    assert list(numbers) == [1, 2]
    assert _portal_tasks() == 0
    assert client.get("/echo/after") == "after"


def test_a_collected_client_is_closed_but_not_while_its_children_are_in_use(server: Server) -> None:
    client = LoyaltyLayer(server.url)
    inner = client._async
    numbers = client.count(3)
    cards = client.cards
    del client
    gc.collect()
    assert list(numbers) == [0, 1, 2]  # the iterator kept its client open
    assert cards.tokenize("c", "p") == "c:p:None:None"
    assert inner._session is not None
    del numbers, cards
    gc.collect()
    deadline = time.monotonic() + 2
    while inner._session is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inner._session is None


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _post(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(url, data=b"{}") as reply:
        return await reply.text()


def test_a_post_after_the_server_closed_the_idle_connection_opens_a_new_one() -> None:
    """The server closes its end of the pooled connection while no thread runs the loop; the next
    call must not send on that connection (aiohttp retries only idempotent methods)."""
    with Server(keepalive_timeout=0.1) as server:
        session = _portal.call(_new_session)
        try:
            assert _portal.call(_post, session, f"{server.url}/echo/one") == "one"
            time.sleep(0.3)
            assert _portal.call(_post, session, f"{server.url}/echo/two") == "two"
        finally:
            _portal.call(session.close)


def test_background_work_a_call_started_goes_on_after_the_call_returns(server: Server) -> None:
    """Like a token refresh: started by one call, awaited by none. The server answers it in
    0.1 s; it must not fail with its own timeout because the next call came later than that."""
    started: list[asyncio.Task[str]] = []

    async def start_in_background() -> None:
        async def fetch() -> str:
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{server.url}/slow?s=0.1") as reply,
            ):
                return await reply.text()

        started.append(asyncio.ensure_future(fetch()))

    async def outcome() -> str:
        await asyncio.wait(started)
        (task,) = started
        return repr(task.exception()) if task.exception() else task.result()

    _portal.call(start_in_background)
    time.sleep(0.8)
    assert _portal.call(outcome) == "slow"


_background: set[asyncio.Future[None]] = set()  # the loop keeps only weak references to tasks


def test_a_task_a_call_left_running_finishes_with_no_further_call() -> None:
    finished = threading.Event()

    async def start_in_background() -> None:
        async def later() -> None:
            await asyncio.sleep(0.05)
            finished.set()

        _background.add(asyncio.ensure_future(later()))

    _portal.call(start_in_background)
    assert finished.wait(5.0)  # the loop thread ran it: no caller runs the loop meanwhile


def test_a_call_racing_with_shutdown_fails_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def noop() -> str:
        return "ok"

    _portal.call(noop)
    runtime = _portal._runtime
    assert runtime is not None
    join = runtime.thread.join
    seen: list[str] = []

    def late_call() -> None:
        try:
            seen.append(_portal.call(noop))
        except RuntimeError:
            seen.append("RuntimeError")

    def join_then_call(timeout: float | None = None) -> None:
        join(timeout)
        # A thread that took this runtime just before shutdown_portal() let go of it calls now,
        # while shutdown is stopping the loop.
        monkeypatch.setattr(_portal, "_runtime_for_caller", lambda running: runtime)
        caller = threading.Thread(target=late_call, daemon=True)
        caller.start()
        caller.join(1)
        monkeypatch.undo()

    runtime.thread.join = join_then_call  # type: ignore[method-assign]
    _portal.shutdown_portal()
    assert seen == ["RuntimeError"]


class _SlowToClose:
    """An async iterator with nothing in it, whose ``aclose`` takes a moment."""

    def __aiter__(self) -> _SlowToClose:
        return self

    async def __anext__(self) -> int:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await asyncio.sleep(0.2)


def test_closing_an_iterator_whose_task_ends_meanwhile_does_not_wait() -> None:
    """The iterator ends; while its driver task is still closing the subject, the sync side
    closes the channel. If the task ends (and the loop thread stops) before the stop request
    reaches the loop, nothing runs that request: close must not wait for its reply."""

    def let_the_loop_stop_first(frame: FrameType, event: str, arg: object) -> None:
        caller = frame.f_back
        if (
            event == "call"
            and frame.f_code is concurrent.futures.Future.__init__.__code__
            and caller is not None
            and caller.f_code is _portal._Channel.close.__code__
        ):
            runtime = _portal._runtime
            deadline = time.monotonic() + 2
            while getattr(runtime, "_driver", None) is not None:
                assert time.monotonic() < deadline
                time.sleep(0.01)

    sys.settrace(let_the_loop_stop_first)
    try:
        started = time.monotonic()
        assert list(_portal.iterate(None, _SlowToClose)) == []
    finally:
        sys.settrace(None)
    assert time.monotonic() - started < 1.0
