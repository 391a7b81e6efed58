"""Client-side pacing: the server must never count more than N requests in any window of W seconds.

The API blocks the whole IP for 60 s on the 101st request of a minute, so pacing has to be exact,
not approximately right on average. :class:`LeaseLimiter` keeps the promise without assuming
anything about network latency: the server counts a request at some moment between our send
and its reply, so a lease is taken before the send and stays taken until ``RateLimit.hold``
seconds after the reply. Two requests admitted on the same lease are then
always more than W seconds apart on the server's count, whether it counts per calendar minute or in
a sliding window.

Time is read only from ``loop.time()`` and handled in integer nanoseconds, and every wake-up is
rounded up to a whole microsecond. That keeps the limiter correct under virtual time (looptime),
where a float residue of a few ulps would otherwise schedule a timer "now" forever, as aiolimiter
does.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import heapq
import math
import os
import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import attrs

from ._errors import EventLoopError

__all__ = [
    "LeaseLimiter",
    "Limiter",
    "LimiterStats",
    "RateLimit",
    "UnlimitedLimiter",
    "check_block",
    "origin_of",
    "shared_limiter",
]

_NS_PER_S = 1_000_000_000
_NS_PER_US = 1_000
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _positive_int(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"RateLimit.{attribute.name} must be a positive integer")


def _positive_seconds(
    _instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"RateLimit.{attribute.name} must be a positive, finite number of seconds")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How many requests the API allows per window, and the safety margin we keep on top.

    ``margin`` is the extra time a lease stays taken after its reply, covering clock-rate drift
    between us and the server. It defaults to 1 s per 60 s of window, so a scaled-down window in
    tests and benchmarks keeps the same shape as the real 100-per-minute one.

    Lower ``requests`` when other traffic shares the egress IP: the server counts it all.
    """

    requests: int = attrs.field(default=100, validator=_positive_int)
    per: float = attrs.field(default=60.0, validator=_positive_seconds)
    margin: float | None = attrs.field(default=None, validator=_positive_seconds)

    @property
    def hold(self) -> float:
        """Seconds a lease stays taken after its request finishes."""
        margin = self.per / 60.0 if self.margin is None else self.margin
        return self.per + margin


class Limiter(abc.ABC):
    """Decides when an HTTP attempt may start. Every attempt of the SDK goes through one.

    Implementations must keep the promise of :class:`RateLimit` whatever the network latency:
    a lease is taken before the request is sent, held while it is in flight and for
    ``RateLimit.hold`` seconds after the reply (or error) arrives.

    Never wait for a token (or anything else that needs a lease) while holding a lease: with every
    lease held by callers waiting on a refresh, the refresh could never start.
    """

    @abc.abstractmethod
    def lease(self, *, priority: bool = False) -> AbstractAsyncContextManager[None]:
        """Wait for a free lease (and for any server block to end), hold it for the attempt.

        ``priority`` lets a token request overtake queued calls, so a refresh never waits
        behind a whole batch.
        """

    @abc.abstractmethod
    async def block(self, seconds: float) -> None:
        """The server answered 429: nobody starts a request for ``seconds`` from now.

        A shorter block never shortens a longer one already set.
        """

    @abc.abstractmethod
    async def blocked_for(self) -> float:
        """Seconds left of the current server block; 0.0 when there is none."""

    @property
    def config(self) -> RateLimit | None:
        """The budget this limiter paces to, or ``None`` when it does not pace.

        The enrollment engine reads it to spread a job's first window of requests.
        """
        return None

    def bind(self, origin: str) -> Self:
        """Pace requests to ``origin`` (``scheme://host:port`` of the API); returns ``self``.

        The client calls it before its first request. A limiter whose budget depends on the
        host (a shared backend keys its state by it) overrides this; others need nothing.
        """
        return self

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release anything the limiter holds (connections of a shared backend)."""


@attrs.frozen(kw_only=True)
class LimiterStats:
    """A snapshot of a limiter, for progress bars and benchmarks.

    ``started`` counts leases granted so far (a lease given back unused by a cancelled waiter is
    not counted); ``held`` is ``in_flight`` plus the leases still cooling down after their reply.
    """

    started: int
    in_flight: int
    waiting: int
    held: int


def _seconds_to_ns(seconds: float) -> int:
    """Round up, so a hold or a block is never a nanosecond shorter than asked."""
    return math.ceil(seconds * _NS_PER_S)


def _now_ns(loop: asyncio.AbstractEventLoop) -> int:
    return round(loop.time() * _NS_PER_S)


def _ceil_us(ns: int) -> float:
    """``ns`` in seconds, rounded up to a whole microsecond: the loop time of a wake-up.

    Virtual clocks tick in microseconds; a wake-up scheduled a fraction of a tick early would find
    the deadline not yet reached and schedule itself again at the same instant, forever.
    """
    return -(-ns // _NS_PER_US) / (_NS_PER_S // _NS_PER_US)


def check_block(seconds: float) -> int:
    """A server block's length in integer nanoseconds; every limiter refuses the same bad values."""
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError("block seconds must be a non-negative, finite number")
    return _seconds_to_ns(seconds)


class _Gate:
    """The state a limiter keeps for one event loop: here, the server-block barrier.

    Loop times of different loops are not comparable (a virtual clock restarts at 0), so all of
    it is per loop. The loop is referenced weakly so that :func:`shared_limiter`'s registry,
    which is keyed weakly by loop, can let a closed loop go.
    """

    __slots__ = ("_loop_ref", "_pid", "blocked_until")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self._pid = os.getpid()
        self.blocked_until = _now_ns(loop)

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._pid == os.getpid() and self._loop_ref() is loop

    def busy_elsewhere(self) -> bool:
        """Whether the loop this state belongs to is still running (in another thread)."""
        bound = self._loop_ref()
        return self._pid == os.getpid() and bound is not None and bound.is_running()

    def block(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        until = _now_ns(loop) + check_block(seconds)
        self.blocked_until = max(self.blocked_until, until)

    def blocked_for(self, loop: asyncio.AbstractEventLoop) -> float:
        return max(0, self.blocked_until - _now_ns(loop)) / _NS_PER_S

    async def wait_open(self, loop: asyncio.AbstractEventLoop) -> None:
        # Polled, not an Event: a new 429 can move the deadline later while we sleep.
        while (left := self.blocked_until - _now_ns(loop)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(_ceil_us(left))


_G = TypeVar("_G", bound=_Gate)


def _for_running_loop(
    owner: object, state: _G | None, new: Callable[[asyncio.AbstractEventLoop], _G]
) -> tuple[asyncio.AbstractEventLoop, _G]:
    """The running loop and the limiter's state for it: fresh when the loop has changed.

    A limiter moves to a new loop only once its old loop has stopped (a new test, a new
    ``asyncio.run``) or the process has forked: leases of a stopped loop can never be returned,
    so keeping them would hang the new loop. Two loops running at once cannot share one limiter
    (its state is not thread-safe), so that is an :class:`EventLoopError`.
    """
    loop = asyncio.get_running_loop()
    if state is not None and state.serves(loop):
        return loop, state
    if state is not None and state.busy_elsewhere():
        raise EventLoopError(
            f"{type(owner).__name__} is in use by an event loop running in another thread; "
            "a limiter serves one loop at a time: give each loop its own "
            "(shared_limiter() does this)"
        )
    return loop, new(loop)


class _LeasePool(_Gate):
    """The lease bookkeeping of a :class:`LeaseLimiter` on one event loop.

    Leases are handed over directly: when one frees up, the longest-waiting coroutine (priority
    ones first) is given it by resolving its future, so exactly as many waiters wake as there are
    free leases. One timer, set for the earliest moment a lease frees up or the block ends, drives
    all of it.
    """

    __slots__ = (
        "_expiries",
        "_hold_ns",
        "_limit",
        "_normal",
        "_priority",
        "_started",
        "_taken",
        "_timer",
        "_timer_at",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RateLimit) -> None:
        super().__init__(loop)
        self._limit = config.requests
        self._hold_ns = _seconds_to_ns(config.hold)
        self._taken = 0
        self._started = 0
        # When each cooling lease frees up (a heap; in-flight leases are not in it).
        self._expiries: list[int] = []
        # Ordered sets of waiters: FIFO, and O(1) removal of a cancelled one.
        self._priority: collections.OrderedDict[asyncio.Future[None], None] = (
            collections.OrderedDict()
        )
        self._normal: collections.OrderedDict[asyncio.Future[None], None] = (
            collections.OrderedDict()
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None

    async def acquire(self, loop: asyncio.AbstractEventLoop, *, priority: bool) -> None:
        # The fast path is only for an empty queue: a lease that has just expired belongs to
        # the waiters, whose timer may not have run yet.
        if not (self._priority or self._normal):
            now = _now_ns(loop)
            self._reap(now)
            if self._taken < self._limit and now >= self.blocked_until:
                self._grant()
                return
        waiter: asyncio.Future[None] = loop.create_future()
        queue = self._priority if priority else self._normal
        queue[waiter] = None
        self._dispatch(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                # Unless a dispatch already skipped it; the timer goes with the last waiter.
                queue.pop(waiter, None)
                self._schedule(loop)
            else:
                # Granted, but cancelled before it could run: the request was never sent.
                self._taken -= 1
                self._started -= 1
                self._dispatch(loop)
            raise

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        heapq.heappush(self._expiries, _now_ns(loop) + self._hold_ns)
        if (self._priority or self._normal) and not loop.is_closed():
            self._dispatch(loop)

    def block(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        super().block(loop, seconds)
        self._dispatch(loop)

    def stats(self) -> LimiterStats:
        loop = self._loop_ref()
        now = math.inf if loop is None else _now_ns(loop)
        cooled = sum(1 for expiry in self._expiries if expiry <= now)
        return LimiterStats(
            started=self._started,
            in_flight=self._taken - len(self._expiries),
            waiting=len(self._priority) + len(self._normal),
            held=self._taken - cooled,
        )

    def _grant(self) -> None:
        self._taken += 1
        self._started += 1

    def _reap(self, now: int) -> None:
        while self._expiries and self._expiries[0] <= now:
            heapq.heappop(self._expiries)
            self._taken -= 1

    def _next_waiter(self) -> asyncio.Future[None] | None:
        for queue in (self._priority, self._normal):
            while queue:
                waiter, _ = queue.popitem(last=False)
                # A waiter cancelled a moment ago whose task has not yet run to remove itself.
                if not waiter.cancelled():
                    return waiter
        return None

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        now = _now_ns(loop)
        self._reap(now)
        if now >= self.blocked_until:
            while self._taken < self._limit and (waiter := self._next_waiter()) is not None:
                self._grant()
                waiter.set_result(None)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep one timer at the next moment a waiter could be served, or none if no one waits.

        With every lease in flight no timer is needed: the next release dispatches.
        """
        deadline: int | None = None
        if self._priority or self._normal:
            if self._taken < self._limit:
                deadline = self.blocked_until
            elif self._expiries:
                deadline = max(self._expiries[0], self.blocked_until)
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = (
            None if deadline is None else loop.call_at(_ceil_us(deadline), self._on_timer, loop)
        )

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = self._timer_at = None
        self._dispatch(loop)


_DEFAULT_RATE_LIMIT = RateLimit()


class LeaseLimiter(Limiter):
    """The in-process lease limiter: at most ``config.requests`` leases, each held while its
    request is in flight and for ``config.hold`` seconds after it ends.

    Waiters are served first come, first served, with ``priority=True`` waiters (the token
    request) ahead of all others. No lease is reserved for them: that would waste 1 % of the
    budget, and the deadlock it would prevent cannot happen as long as nobody waits for a token
    while holding a lease.

    Nothing is bound to an event loop until first use. A limiter serves one loop at a time; used
    from a new loop after its old one has stopped (a new test, a second ``asyncio.run``, a forked
    child), it starts afresh there, with all leases free and no block. Used from a second loop
    while the first is still running (another thread), it raises :class:`EventLoopError`.
    Clients of one process that talk to one host should share one limiter
    (:func:`shared_limiter`), since the server counts per IP.
    """

    def __init__(self, config: RateLimit = _DEFAULT_RATE_LIMIT) -> None:
        self._config = config
        self._pool: _LeasePool | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"

    @property
    def config(self) -> RateLimit:
        return self._config

    @property
    def stats(self) -> LimiterStats:
        """Leases granted so far, in flight, waited for and held, as of now."""
        if self._pool is None:
            return LimiterStats(started=0, in_flight=0, waiting=0, held=0)
        return self._pool.stats()

    def lease(self, *, priority: bool = False) -> AbstractAsyncContextManager[None]:
        return _PoolLease(self, priority)

    async def block(self, seconds: float) -> None:
        loop, pool = self._bind()
        pool.block(loop, seconds)

    async def blocked_for(self) -> float:
        loop, pool = self._bind()
        return pool.blocked_for(loop)

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, _LeasePool]:
        loop, self._pool = _for_running_loop(
            self, self._pool, lambda loop: _LeasePool(loop, self._config)
        )
        return loop, self._pool


class UnlimitedLimiter(Limiter):
    """No pacing (``rate_limit=None``), but a server 429 still pauses every request.

    Bound to event loops the same way as :class:`LeaseLimiter`.
    """

    def __init__(self) -> None:
        self._gate: _Gate | None = None
        self._lease = _GateLease(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def lease(self, *, priority: bool = False) -> AbstractAsyncContextManager[None]:
        return self._lease

    async def block(self, seconds: float) -> None:
        loop, gate = self._bind()
        gate.block(loop, seconds)

    async def blocked_for(self) -> float:
        loop, gate = self._bind()
        return gate.blocked_for(loop)

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, _Gate]:
        loop, self._gate = _for_running_loop(self, self._gate, _Gate)
        return loop, self._gate


class _PoolLease:
    """One attempt's lease (a plain class: this runs once per request, so it must be cheap)."""

    __slots__ = ("_limiter", "_loop", "_pool", "_priority")

    def __init__(self, limiter: LeaseLimiter, priority: bool) -> None:
        self._limiter = limiter
        self._priority = priority

    async def __aenter__(self) -> None:
        self._loop, self._pool = self._limiter._bind()
        await self._pool.acquire(self._loop, priority=self._priority)

    async def __aexit__(self, *_: object) -> None:
        self._pool.release(self._loop)


class _GateLease:
    """Waits out a server block; nothing to give back, so one serves every request."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: UnlimitedLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        loop, gate = self._limiter._bind()
        if gate.blocked_until > _now_ns(loop):
            await gate.wait_open(loop)

    async def __aexit__(self, *_: object) -> None:
        return None


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower-cased and with the default port spelled out."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    if not scheme or not host:
        # The URL is not echoed: it may carry credentials.
        raise ValueError("origin must be an absolute URL such as 'https://api.example.com'")
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


_SHARED: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, RateLimit], LeaseLimiter]
] = weakref.WeakKeyDictionary()


def shared_limiter(origin: str, config: RateLimit) -> LeaseLimiter:
    """The limiter every client of this event loop uses for ``origin`` with ``config``.

    The server counts requests per IP, so two clients of one process talking to one host must
    draw on one budget. The registry is keyed weakly by loop, so a closed loop frees its limiters.
    Call it from a coroutine on the loop that will use the limiter.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "shared_limiter() must be called from a coroutine on the event loop that will use it"
        ) from None
    limiters = _SHARED.setdefault(loop, {})
    key = (origin_of(origin), config)
    limiter = limiters.get(key)
    if limiter is None:
        limiter = limiters[key] = LeaseLimiter(config)
    return limiter
