"""Reading a job's records: an async iterable on the loop, a plain iterable on a thread of its own.

A plain iterable may block (a database cursor, a paged API, a queue) or belong to the thread
that made it. Read on the event loop, a slow one would stall every request of the job and, for
the synchronous client, every other thread's calls, which share that one loop. So it is read one
record at a time, when the job asks for the next, on one daemon thread per job:

* the same thread for every record, and for the iterator's clean-up (a generator's ``finally``);
* never ahead of the job, so what has not been read is still the caller's;
* a daemon, unlike a ``ThreadPoolExecutor``'s workers, which the interpreter joins at exit: a
  source that never returns (a queue no one feeds any more) must not hold up the exit.

A list or a tuple is in memory already: it is read in place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

__all__ = ["RECORDS_THREAD", "each_record"]

RECORDS_THREAD = "loyaltylayer-records"

_T = TypeVar("_T")
_P = ParamSpec("_P")
_END = object()


async def each_record(records: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """Every record of ``records``, read where the module says; close it to stop reading."""
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
        return
    if isinstance(records, list | tuple):
        for record in records:
            yield record
        return
    loop = asyncio.get_running_loop()
    thread = _OneThread()
    iterator: Iterator[Any] | None = None
    try:
        iterator = await loop.run_in_executor(thread, iter, records)
        while (record := await loop.run_in_executor(thread, next, iterator, _END)) is not _END:
            yield record
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            thread.submit(close)
        thread.shutdown()


class _OneThread(concurrent.futures.Executor):
    """Runs what is submitted, in order, on one daemon thread (see the module)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=RECORDS_THREAD, daemon=True).start()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._calls.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the thread once it has run what it was given; it is never waited for."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as error:  # the job's to handle, whatever it is
                future.set_exception(error)
