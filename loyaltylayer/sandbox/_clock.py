"""The one clock every time-dependent rule of the sandbox reads.

Token and enrol-token expiry, idempotency TTL, rate windows, blocks and the timestamps in bodies
all come from :class:`Clock`, so a test can move all of them at once (``advance``) and an SDK client
on the same event loop under ``looptime`` shares the sandbox's virtual time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

__all__ = ["Clock"]


class Clock:
    """Sandbox time in epoch seconds: a source plus an offset that only ``advance`` changes.

    With no ``source`` the clock follows the event loop the server runs on:
    ``epoch_at_start + (loop.time() - loop_time_at_start) + offset``. ``looptime`` switches a
    loop to virtual time only once a test body starts, after fixtures have started the sandbox;
    that makes ``loop.time()`` jump backwards, so the clock re-anchors on any backward step and
    never runs backwards itself.
    """

    __slots__ = (
        "_anchor_epoch",
        "_anchor_loop",
        "_last_loop",
        "_lock",
        "_loop",
        "_offset",
        "_source",
    )

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self._source = source
        self._offset = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._anchor_epoch = time.time()
        self._anchor_loop = 0.0
        self._last_loop = 0.0
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow ``loop`` from now on (called by the server when it starts on that loop)."""
        with self._lock:
            self._loop = loop
            self._anchor_epoch = time.time()
            self._anchor_loop = self._last_loop = loop.time()

    def now(self) -> float:
        """The sandbox time, epoch seconds."""
        if self._source is not None:
            return self._source() + self._offset
        if self._loop is None:
            return time.time() + self._offset
        with self._lock:
            loop_now = self._loop.time()
            if loop_now < self._last_loop:
                self._anchor_epoch += self._last_loop - self._anchor_loop
                self._anchor_loop = loop_now
            self._last_loop = loop_now
            return self._anchor_epoch + (loop_now - self._anchor_loop) + self._offset

    def advance(self, seconds: float) -> None:
        """Move sandbox time forward; going back would break expiry and window invariants."""
        if not seconds >= 0:
            raise ValueError("Clock.advance: seconds must be a non-negative number")
        with self._lock:
            self._offset += seconds

    @property
    def offset(self) -> float:
        """Total seconds added by ``advance`` so far."""
        return self._offset
