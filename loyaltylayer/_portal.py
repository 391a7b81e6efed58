"""The portal: the one event loop of a process that the generated sync classes run on.

The loop runs forever on a daemon thread, ``loyaltylayer-io``, started by the first sync call of
a process. aiohttp sessions belong to the loop that made them, so every sync call, from every
thread, runs on this one loop, and nothing else ever runs it.

* ``call`` submits one coroutine to the loop, in a copy of the caller's contextvars, and waits
  for its result (or the very exception object it raised). Ctrl-C, or any interruption of the
  wait, cancels its task.
* ``iterate`` drives an async iterator with one task, for its whole life (so ``asyncio.timeout``
  and task groups spanning a ``yield`` behave as in async code), which hands the items over
  through a bounded channel.
* Nothing is started or registered at import. The first start registers the exit and fork hooks:
  at exit, calls in flight are cancelled, live clients are closed and the loop is closed.
* User code runs on the loop (a checkpoint, a token cache): a ``SystemExit`` or
  ``KeyboardInterrupt`` it raises reaches the sync caller waiting for it, as itself, and the loop
  runs on for every other caller (see ``_Portal._serve``). A thread that ended anyway is noticed:
  a caller waiting on it gets an error, the next call starts a new one.
* A forked child (``os.fork``, or a server such as uWSGI that forks without Python's at-fork
  hooks: the pid tells) starts a fresh portal. What it inherited is made harmless to the parent
  and buried (see ``_disown``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import queue
import selectors
import sys
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from ._errors import EventLoopError
from ._graveyard import bury

__all__ = ["THREAD_NAME", "SyncInAsyncWarning", "call", "iterate", "shutdown_portal", "track"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

THREAD_NAME: Final = "loyaltylayer-io"

# A waiting caller wakes this often: a blocking wait is not interruptible by Ctrl-C everywhere
# (Windows), and a call submitted while the portal was being shut down never runs.
_POLL_INTERVAL: Final = 0.1
# How long stopping the portal gives calls to finish cancelling and clients to close, and how long
# closing a sync iterator waits for its async iterator's clean-up.
_CLOSE_TIMEOUT: Final = 5.0
# How many items an iterator's task may fetch before its sync reader has taken them.
_AHEAD: Final = 8

_EXITING: Final = "the interpreter is exiting: loyaltylayer's portal is closed"
_SELF_DEADLOCK: Final = (
    "a loyaltylayer sync method was called on the portal's own thread (from a coroutine or "
    "callback of another sync call, or a finalizer such as __del__ that ran during one), where it "
    "would wait for itself forever; use AsyncLoyaltyLayer with await there, or call it elsewhere"
)


class SyncInAsyncWarning(RuntimeWarning):
    """A sync method was called from a thread that is running an event loop.

    The call still works (it runs on the portal's loop), but it blocks the caller's loop for its
    whole duration; inside async code, use ``AsyncLoyaltyLayer`` with ``await`` instead.
    Make it an error with ``warnings.simplefilter("error", SyncInAsyncWarning)``.
    """


class Closeable(Protocol):
    """What the portal closes at exit: an async client."""

    async def close(self) -> None: ...


class _Portal:
    """One process's event loop, and the daemon thread running it (``None`` while stopped)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # Made here, not inside asyncio, so that a forked child can reach its descriptor.
        self.selector = selectors.DefaultSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Its thread runs the loop: it was started, and neither stopped nor ended otherwise."""
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        thread.start()
        self.thread = thread

    def _serve(self) -> None:
        """Run the loop until :meth:`stop` stops it.

        A task whose coroutine raises ``KeyboardInterrupt`` or ``SystemExit`` keeps it, and
        raises it in whoever awaits the task (so it reaches the sync caller); asyncio also lets
        it out of ``run_forever``, for a program that owns its loop. This loop is every
        thread's, so it runs on: callbacks not yet run stay queued, and are run next.
        """
        while True:
            try:
                self.loop.run_forever()
            except (KeyboardInterrupt, SystemExit):
                continue
            return

    def stop(self, clients: list[Closeable]) -> None:
        """Close ``clients``, cancel every task, then stop the loop and its thread (bounded)."""
        assert self.thread is not None
        finished = asyncio.run_coroutine_threadsafe(_finish(clients), self.loop)
        with contextlib.suppress(BaseException):
            finished.result(3 * _CLOSE_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_CLOSE_TIMEOUT)
        if not self.thread.is_alive():
            self.thread = None


_lock = threading.Lock()
_portal: _Portal | None = None
_hooked = False
_exiting = False
_warned = False
_live: weakref.WeakSet[Closeable] = weakref.WeakSet()
_untracked: weakref.WeakKeyDictionary[object, Closeable] = weakref.WeakKeyDictionary()
_to_close: set[Closeable] = set()  # dropped while the portal was stopped: closed when it starts
_closing: set[asyncio.Future[None]] = set()  # the loop keeps only weak references to tasks


def call(fn: Callable[_P, Coroutine[Any, Any, _T]], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``fn(*args, **kwargs)`` as a task on the portal loop and return its result.

    The caller's contextvars are visible in the task. An exception is re-raised as the same
    object the coroutine raised. Ctrl-C (any ``BaseException`` from the moment the call is handed
    over to the loop) cancels the task.
    """
    portal = _running(stacklevel=4)
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()
    coroutine = fn(*args, **kwargs)
    try:
        try:
            portal.loop.call_soon_threadsafe(_run_task, future, coroutine)  # in caller's context
        except RuntimeError:  # the loop was closed: the interpreter is exiting
            coroutine.close()
            _park_if_exiting()
            raise EventLoopError(_EXITING) from None
        return _wait(future, portal)
    except BaseException:
        # Also a Ctrl-C while the call is being handed over, when the task may already run.
        future.cancel()  # which cancels the task, on the loop (see `_run_task`)
        raise


def _run_task(future: concurrent.futures.Future[_T], coroutine: Coroutine[Any, Any, _T]) -> None:
    """On the loop: run ``coroutine`` as a task that settles ``future``, and is cancelled with it.

    Not ``asyncio.run_coroutine_threadsafe``: it hands a ``TimeoutError`` over as a copy, and a
    sync caller must get the very exception object the coroutine raised.
    """
    if future.cancelled():  # the caller gave up before it started
        coroutine.close()
        return
    task = asyncio.ensure_future(coroutine)
    task.add_done_callback(functools.partial(_settle, future))
    loop = task.get_loop()
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(task.cancel))


def _settle(future: concurrent.futures.Future[_T], task: asyncio.Task[_T]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller cancelled it
        if task.cancelled():
            future.cancel()
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())


def _wait(future: concurrent.futures.Future[_T], portal: _Portal) -> _T:
    while True:
        try:
            return future.result(_POLL_INTERVAL)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError
                raise
            if not portal.alive:
                raise EventLoopError("the loyaltylayer portal was shut down") from None
        except concurrent.futures.CancelledError:
            _park_if_exiting()
            raise EventLoopError("the loyaltylayer portal was shut down during this call") from None


def iterate(
    owner: object, fn: Callable[_P, AsyncIterator[_T]], /, *args: _P.args, **kwargs: _P.kwargs
) -> Iterator[_T]:
    """Iterate ``fn(*args, **kwargs)`` from sync code, driven by one task on the portal loop.

    Leaving the loop early (``break``, an exception, or garbage collection of the iterator)
    cancels the task, which closes the async iterator, so its ``finally`` blocks run. ``owner``
    (the sync object the iterator came from) is kept alive meanwhile, so its client is not
    closed under it.
    """
    channel = _Channel(_running(stacklevel=3))
    try:
        channel.start(fn(*args, **kwargs))
        while True:
            item = channel.take()
            if item is _END:
                return
            yield item
    finally:
        channel.close()


_END: Any = object()


class _Channel:
    """An async iterator and the task on the portal loop that pulls from it, at most ``_AHEAD``
    items ahead of the sync reader, which takes them (and then the end) from a queue."""

    def __init__(self, portal: _Portal) -> None:
        self._portal = portal
        self._loop = portal.loop
        self._items: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(_AHEAD)  # bound to the loop when first waited on
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    def start(self, iterator: AsyncIterator[Any]) -> None:
        self._loop.call_soon_threadsafe(self._start, iterator)  # in the caller's context

    def _start(self, iterator: AsyncIterator[Any]) -> None:
        self._task = self._loop.create_task(self._pump(iterator))

    async def _pump(self, iterator: AsyncIterator[Any]) -> None:
        error: BaseException | None = None
        try:
            while True:
                await self._room.acquire()
                self._items.put((await anext(iterator), None))
        except StopAsyncIteration:
            pass
        except BaseException as exc:  # the iterator's error, or the reader's cancellation
            error = exc
        try:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._items.put((_END, error))

    def take(self) -> Any:
        """The next item, or ``_END``; the iterator's exception is raised as itself."""
        while True:
            try:
                item, error = self._items.get(timeout=_POLL_INTERVAL)
                break
            except queue.Empty:
                if not self._portal.alive:
                    raise EventLoopError("the loyaltylayer portal was shut down") from None
        if item is _END:
            self._ended = True
            if isinstance(error, asyncio.CancelledError):  # the portal was stopped
                _park_if_exiting()
                raise EventLoopError("the loyaltylayer portal was shut down during this iteration")
            if error is not None:
                raise error
        else:
            self._loop.call_soon_threadsafe(self._room.release)
        return item

    def close(self) -> None:
        """End the task (which closes the async iterator) unless it ended; wait for that,
        unless waiting could hang (on the loop's own thread, at exit, in a forked child)."""
        if self._ended:
            return
        self._ended = True
        try:
            self._loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:  # the loop is closed: shutting down closed the iterator
            return
        portal = self._portal
        if portal.pid != os.getpid() or threading.current_thread() is portal.thread:
            return
        waited = 0.0
        while not sys.is_finalizing() and waited < _CLOSE_TIMEOUT:
            with contextlib.suppress(queue.Empty):
                if self._items.get(timeout=_POLL_INTERVAL)[0] is _END:
                    return
            waited += _POLL_INTERVAL

    def _cancel(self) -> None:
        # Run after `_start` if that was scheduled at all (one thread scheduled both, in order).
        if self._task is None:  # never started: nothing else would end the wait in `close`
            self._items.put((_END, None))
        else:
            self._task.cancel()


def track(facade: object, client: Closeable) -> None:
    """Close ``client`` when its sync ``facade`` is collected (in the background), or at exit.

    Until the portal first starts, the client has made no call and has nothing to close: the
    finalizer is registered then.
    """
    _live.add(client)
    if _hooked:
        weakref.finalize(facade, _close_soon, client).atexit = False
    else:
        _untracked[facade] = client


def _close_soon(client: Closeable) -> None:
    portal = _portal
    if portal is None or portal.pid != os.getpid() or _exiting:
        return
    if not portal.alive:  # kept until the portal starts again, or the exit closes the live ones
        _to_close.add(client)
        return
    with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
        portal.loop.call_soon_threadsafe(_start_closing, client)


def _start_closing(client: Closeable) -> None:
    task = asyncio.ensure_future(client.close())
    _closing.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[None]) -> None:
    _closing.discard(task)
    if not task.cancelled():
        task.exception()  # seen: a failed close is not worth a "never retrieved" log


def shutdown_portal() -> None:
    """Stop the portal's thread: cancel what runs on its loop and end the thread.

    Clients stay usable: the next sync call starts the thread again, and a forked child starts
    a portal of its own, where each client opens new connections. Call it in a pre-fork server's
    parent before it forks, so that workers inherit no thread (see ``docs/sync.md`` in the
    source distribution).
    """
    with _lock:
        portal = _portal
        if portal is not None and portal.pid == os.getpid() and portal.alive:
            portal.stop([])


def _running(*, stacklevel: int) -> _Portal:
    """This process's portal, its thread started; refuses a call that would deadlock it."""
    portal = _portal
    if portal is None or not portal.alive or portal.pid != os.getpid():
        portal = _start()
    if threading.current_thread() is portal.thread:
        raise EventLoopError(_SELF_DEADLOCK)
    if not _warned:
        _warn_if_in_a_loop(stacklevel + 1)
    return portal


def _start() -> _Portal:
    global _portal
    with _lock:
        if _portal is not None and _portal.pid != os.getpid():
            _disown(_portal)  # forked without at-fork hooks (uWSGI): the pid tells
            _portal = None
        if _exiting:
            _park_if_exiting()
            raise EventLoopError(_EXITING)
        if _portal is None:
            _register_hooks()
            _portal = _Portal()
        if not _portal.alive:
            _portal.start()
            while _to_close:
                _portal.loop.call_soon_threadsafe(_start_closing, _to_close.pop())
        return _portal


def _warn_if_in_a_loop(stacklevel: int) -> None:
    global _warned
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if "ipykernel" in sys.modules:  # Jupyter runs every cell in its loop: expected there
        return
    _warned = True
    warnings.warn(
        "a loyaltylayer sync method was called from a running event loop; it blocks that "
        "loop until the call returns (use AsyncLoyaltyLayer with await instead)",
        SyncInAsyncWarning,
        stacklevel=stacklevel,
    )


async def _finish(clients: list[Closeable]) -> None:
    """On the loop, when it stops: close ``clients``, cancel the rest, let it all unwind."""
    current = asyncio.current_task()
    closes = [asyncio.ensure_future(client.close()) for client in clients]
    others = asyncio.all_tasks() - {current, *closes, *_closing}
    for task in others:
        task.cancel()
    if others or closes or _closing:
        await asyncio.wait([*others, *closes, *_closing], timeout=_CLOSE_TIMEOUT)
    await asyncio.sleep(0)  # let transports see their connections closed
    leftovers = asyncio.all_tasks() - {current}
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=_CLOSE_TIMEOUT)
    with contextlib.suppress(RuntimeError):  # Python 3.12.0-3.12.1 start no thread at exit
        await asyncio.get_running_loop().shutdown_default_executor()


def _disown(portal: _Portal) -> None:
    """Make a portal inherited through ``fork`` harmless to the parent, and keep it forever.

    The child's copy of the epoll descriptor refers to the parent's epoll instance: anything
    the child closes through the inherited loop (a connection of an inherited session, when
    it is finalized) would unregister the parent's socket there. Pointing that descriptor at a
    fresh instance of the child's own cuts the link; reports from the inherited objects are the
    parent's business, so this loop ignores them.
    """
    fileno = getattr(portal.selector, "fileno", None)  # epoll, kqueue: select() has none
    if fileno is not None:
        private = type(portal.selector)()
        os.dup2(private.fileno(), fileno(), inheritable=False)
        private.close()
    portal.loop.set_exception_handler(lambda loop, context: None)
    bury(portal)


def _park_if_exiting() -> None:
    """Park a daemon thread whose call the exiting interpreter cancelled, instead of letting it
    print a traceback, until the process ends."""
    if _exiting and threading.current_thread().daemon:
        threading.Event().wait()


def _register_hooks() -> None:
    """Once per interpreter (a forked child inherits them): exit and fork hooks, finalizers."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    atexit.register(_at_exit)
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
    for facade, client in list(_untracked.items()):
        weakref.finalize(facade, _close_soon, client).atexit = False
    _untracked.clear()


def _before_fork() -> None:
    _lock.acquire()  # a fork waits for a portal being started or stopped


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    global _lock, _portal
    _lock = threading.Lock()
    if _portal is not None:
        _disown(_portal)
        _portal = None


def _at_exit() -> None:
    global _exiting
    with _lock:
        _exiting = True
        portal = _portal
        if portal is None:
            return
        if portal.pid != os.getpid():
            _disown(portal)  # forked without at-fork hooks, and never called here
            return
        if not portal.alive:  # stopped by shutdown_portal(): start it to close the clients
            try:
                portal.start()
            except RuntimeError:  # Python 3.12.0-3.12.1: the OS closes the connections
                portal.loop.set_exception_handler(lambda loop, context: None)
                bury(portal)
                return
        portal.stop(list(_live))
        if portal.thread is None:
            portal.loop.close()
