"""Client-side pacing: the server must never count more than N requests in any window of W seconds.

The API blocks the whole IP for 60 s on the 101st request of a minute, so pacing has to be exact,
not approximately right on average. :class:`LeaseLimiter` keeps the promise without assuming
anything about network latency: the server counts a request at some moment between our send
and its reply, so a lease is taken before the send and stays taken until ``RateLimit.hold``
seconds after the reply. Two requests admitted on the same lease are then
always more than W seconds apart on the server's count, whether it counts per calendar minute or in
a sliding window.

One budget serves every event loop of a process that talks to one host (an async web app's loop
and the sync facade's portal loop, say), so its state is guarded by a lock and a waiter on one
loop can be handed a lease freed on another. Only loops that read the same clock share a budget:
asyncio's and uvloop's loops read the monotonic clock; a loop of another clock (a virtual-time
test) gets a budget of its own.

Time is read only from ``loop.time()`` and handled in integer nanoseconds, and every wake-up is
rounded up to a whole microsecond. That keeps the limiter correct under virtual time (looptime),
where a float residue of a few ulps would otherwise schedule a timer "now" forever, as aiolimiter
does.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import heapq
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import urlsplit

import attrs

from ._errors import BudgetExhaustedError
from ._retry_after import cap_retry_after

__all__ = [
    "PROBE_FIRST",
    "PROBE_LONGEST",
    "LeaseLimiter",
    "LeasePriority",
    "Limiter",
    "LimiterStats",
    "Priority",
    "RateLimit",
    "ServerBudget",
    "UnlimitedLimiter",
    "check_block",
    "origin_of",
    "server_budget",
    "shared_limiter",
]

Priority = Literal["interactive", "batch"]
"""Whose call it is: ``interactive`` (someone is waiting for it: the default for direct calls)
takes the next free lease ahead of every queued ``batch`` call (the enrollment engine,
``batch_create``'s chunks, the CLI)."""

LeasePriority = Literal["token", "interactive", "batch"]
"""The order waiters are served in: the token request, then interactive calls, then batch."""

_CLASSES: tuple[LeasePriority, ...] = ("token", "interactive", "batch")

_NS_PER_S = 1_000_000_000
_NS_PER_US = 1_000
_DEFAULT_PORTS = {"http": 80, "https": 443}

PROBE_FIRST = 4
"""Windows an adapted limit waits before it first probes one lease higher."""
PROBE_LONGEST = 64
"""The longest wait between probes, in windows: each probe that ends in a 429 doubles it."""


def _positive_int(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"RateLimit.{attribute.name} must be a positive integer")


def _positive_seconds(
    _instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"RateLimit.{attribute.name} must be a positive, finite number of seconds")


def _reserve(instance: RateLimit, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("RateLimit.reserve must be a whole number, 0 or more")
    if isinstance(instance.requests, int) and value >= instance.requests:
        raise ValueError("RateLimit.reserve must be less than RateLimit.requests")


def _flag(_instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"RateLimit.{attribute.name} must be True or False")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How many requests the API allows per window, and the safety margin we keep on top.

    ``margin`` is the extra time a lease stays taken after its reply, covering clock-rate drift
    between us and the server. It defaults to 1 s per 60 s of window, so a scaled-down window in
    tests and benchmarks keeps the same shape as the real 100-per-minute one.

    ``reserve`` leases may be taken by interactive calls only, so that a web handler never waits
    behind a batch job in the same budget; off by default, because a lone job must be able to
    use the whole budget.

    ``adaptive`` (on by default): a 429 the limiter did not cause means that the server's limit
    is lower than ``requests`` or that other traffic shares the IP, so the limiter lowers its own
    limit to what the server evidently allowed, then probes back up slowly and rarely (each
    overshoot costs everyone on the IP a block). Standard rate-limit headers, when the server
    sends them, are used the same way.
    """

    requests: int = attrs.field(default=100, validator=_positive_int)
    per: float = attrs.field(default=60.0, validator=_positive_seconds)
    margin: float | None = attrs.field(default=None, validator=_positive_seconds)
    reserve: int = attrs.field(default=0, validator=_reserve)
    adaptive: bool = attrs.field(default=True, validator=_flag)

    @property
    def hold(self) -> float:
        """Seconds a lease stays taken after its request finishes."""
        margin = self.per / 60.0 if self.margin is None else self.margin
        return self.per + margin


@attrs.frozen(kw_only=True)
class LimiterStats:
    """A snapshot of a limiter, for progress bars, load shedding and benchmarks.

    ``started`` counts leases granted so far (a lease given back unused by a cancelled waiter is
    not counted); ``held`` is ``in_flight`` plus the leases still cooling down after their reply;
    ``limit`` is the number of leases the limiter allows now (lower than configured after the
    server showed it allows fewer), ``None`` for a limiter that does not pace. A limiter that
    keeps no counts reports zeros.
    """

    started: int = 0
    interactive_started: int = 0
    """Of ``started``, the leases of interactive calls and token requests."""
    in_flight: int = 0
    waiting: int = 0
    held: int = 0
    blocked_for: float = 0.0
    limit: int | None = None


@attrs.frozen(kw_only=True)
class ServerBudget:
    """What a reply's standard rate-limit headers say (each ``None`` when not sent)."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    """Seconds until ``remaining`` is back to ``limit``."""


class Limiter(abc.ABC):
    """Decides when an HTTP attempt may start. Every attempt of the SDK goes through one.

    Implementations must keep the promise of :class:`RateLimit` whatever the network latency:
    a lease is taken before the request is sent, held while it is in flight and for
    ``RateLimit.hold`` seconds after the reply (or error) arrives.

    Never wait for a token (or anything else that needs a lease) while holding a lease: with every
    lease held by callers waiting on a refresh, the refresh could never start.
    """

    @abc.abstractmethod
    def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Wait for a free lease (and for any server block to end), hold it for the attempt.

        Waiters are served by ``priority``: the token request first (a refresh never waits
        behind a whole batch), then interactive calls, then batch calls. With ``max_wait``, a
        wait that cannot end in time raises :class:`~loyaltylayer.BudgetExhaustedError` (with
        the estimated wait as ``retry_after``): at once when the limiter can tell, else when the
        time is up.
        """

    @abc.abstractmethod
    async def block(self, seconds: float) -> None:
        """The server answered 429: nobody starts a request for ``seconds`` from now.

        A shorter block never shortens a longer one already set.
        """

    @abc.abstractmethod
    async def blocked_for(self) -> float:
        """Seconds left of the current server block; 0.0 when there is none."""

    async def observe(self, budget: ServerBudget) -> None:  # noqa: B027 - optional hook
        """A reply carried standard rate-limit headers (the SDK calls this only then)."""

    @property
    def stats(self) -> LimiterStats:
        """Leases granted, in flight, waited for and held, and the block left, as of now.

        Readable from any thread, before the first request too.
        """
        return LimiterStats()

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
    """A server block's length in integer nanoseconds, at most ``MAX_RETRY_AFTER`` whoever asks
    (one bad ``Retry-After`` must not stall every call for longer); every limiter refuses the
    same bad values."""
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError("block seconds must be a non-negative, finite number")
    return _seconds_to_ns(cap_retry_after(seconds))


def _whole(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def server_budget(headers: Mapping[str, str]) -> ServerBudget | None:
    """The standard rate-limit headers of a reply, or ``None`` when it has none.

    ``RateLimit-Limit``/``-Remaining``/``-Reset`` (IETF draft) or ``X-RateLimit-*``. A reset
    larger than a year is read as an epoch time (as some servers send it), else as seconds.
    Malformed values are ignored: the headers are optional input, never required.
    """
    for prefix in ("RateLimit-", "X-RateLimit-"):
        limit = _whole(headers.get(prefix + "Limit"))
        remaining = _whole(headers.get(prefix + "Remaining"))
        if limit is None and remaining is None:
            continue
        reset = _whole(headers.get(prefix + "Reset"))
        seconds = None
        if reset is not None:
            seconds = float(max(0.0, reset - time.time()) if reset > 366 * 86400 else reset)
        return ServerBudget(limit=limit, remaining=remaining, reset=seconds)
    return None


class _ProcessLock:
    """A lock that a forked child does not inherit held: each process gets its own."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self) -> threading.Lock:
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.Lock()
        return self._lock


_STATE_LOCK = _ProcessLock()
"""Guards the swap of a limiter's state for a fresh one, and the shared limiters' registry."""


_SAME_CLOCK = 1.0
"""How far, in seconds, a loop's time may be from ``time.monotonic()`` and still be that clock:
uvloop reads it once per loop iteration; a virtual clock starts at 0, the monotonic clock at
boot."""


def _reads_the_monotonic_clock(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.time()`` is the monotonic clock, which every such loop of the process
    shares, whenever it runs (asyncio's loops and uvloop's do; a virtual-time loop does not)."""
    return abs(loop.time() - time.monotonic()) < _SAME_CLOCK


class _Gate:
    """A limiter's state in one process: the server-block barrier, shared by every loop using it.

    Every loop of the monotonic clock shares it, at the same time (an async app's loop and the
    sync portal's) or in turn (a second ``asyncio.run``, a one-off loop per request): the server
    has not forgotten the requests of a loop that stopped. A state made on another clock (a
    virtual one, which restarts at 0 with each test) serves its own loop only, and a loop of
    another clock than the state's starts a fresh state, as a forked child does: times of one
    clock mean nothing on another.
    """

    __slots__ = ("_last", "_monotonic", "_pid", "blocked_until", "lock")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lock = threading.Lock()
        self._pid = os.getpid()
        self._last = weakref.ref(loop)
        self._monotonic = _reads_the_monotonic_clock(loop)
        self.blocked_until = _now_ns(loop)

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """The fast check: the loop that used it last, in this process."""
        return self._last() is loop and self._pid == os.getpid()

    def admit(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` may share this state: this process's, and both read the monotonic
        clock (call with ``lock`` held)."""
        if self._pid != os.getpid():
            return False
        if not (self._monotonic and _reads_the_monotonic_clock(loop)):
            return False
        self._last = weakref.ref(loop)
        return True

    def now_outside(self) -> int | None:
        """The state's time read outside any coroutine (for ``stats``): the last loop's, or the
        monotonic clock once that loop is gone; ``None`` when neither can be read."""
        loop = self._last()
        if loop is not None:
            return _now_ns(loop)
        return round(time.monotonic() * _NS_PER_S) if self._monotonic else None

    def block(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        until = _now_ns(loop) + check_block(seconds)
        with self.lock:
            self.blocked_until = max(self.blocked_until, until)

    def blocked_for(self, loop: asyncio.AbstractEventLoop) -> float:
        return self.left_at(_now_ns(loop))

    def left_at(self, now: int | None) -> float:
        """Seconds of block left at ``now`` (none when the time cannot be read)."""
        return 0.0 if now is None else max(0, self.blocked_until - now) / _NS_PER_S

    async def wait_open(self, loop: asyncio.AbstractEventLoop) -> None:
        # Polled, not an Event: a new 429 can move the deadline later while we sleep.
        while (left := self.blocked_until - _now_ns(loop)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(_ceil_us(left))


_G = TypeVar("_G", bound=_Gate)


class _Bound(Generic[_G]):
    """What a limiter with per-process state has: the state, made on first use, and its swap."""

    _state: _G | None

    def _bind_state(
        self, new: Callable[[asyncio.AbstractEventLoop], _G]
    ) -> tuple[asyncio.AbstractEventLoop, _G]:
        """The running loop and the limiter's state for it: fresh when the loop reads another
        clock than the old state's (a virtual-time test) or the process forked."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.serves(loop):
            return loop, state
        with _STATE_LOCK.get():
            state = self._state
            if state is not None:
                with state.lock:
                    if state.admit(loop):
                        return loop, state
            fresh = new(loop)
            self._state = fresh
            return loop, fresh


class _LoopSide:
    """One loop's part in a shared lease pool: its leases in flight and its wake-up timer."""

    __slots__ = ("in_flight", "loop_ref", "timer", "timer_at", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.in_flight = 0
        self.waiting = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: int | None = None


class _Waiter:
    __slots__ = ("future", "granted", "held", "rank", "side")

    def __init__(self, future: asyncio.Future[None], side: _LoopSide, rank: int) -> None:
        self.future = future
        self.side = side
        self.rank = rank
        self.granted = False
        self.held = 0
        """Leases held when this one was granted."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _LeasePool(_Gate):
    """The lease bookkeeping of a :class:`LeaseLimiter`, shared by the loops of a process.

    Leases are handed over directly: when one frees up, the longest-waiting coroutine of the
    highest class is given it by resolving its future (on its own loop), so exactly as many
    waiters wake as there are free leases. Each loop with waiters keeps one timer, set for the
    earliest moment a lease frees up or the block ends; whichever fires first serves them all.
    """

    __slots__ = (
        "_adaptive",
        "_batch_paced_until",
        "_ceiling",
        "_expiries",
        "_held_before_last",
        "_hold_ns",
        "_interactive_started",
        "_interval",
        "_limit",
        "_margin_ns",
        "_probe_at",
        "_probing",
        "_queues",
        "_reserve",
        "_sides",
        "_started",
        "_step",
        "_taken",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RateLimit) -> None:
        super().__init__(loop)
        self._reserve = config.reserve
        self._adaptive = config.adaptive
        self._hold_ns = _seconds_to_ns(config.hold)
        self._margin_ns = self._hold_ns - _seconds_to_ns(config.per)
        self._limit = self._ceiling = config.requests
        self._step = 1
        self._interval = PROBE_FIRST
        self._probe_at: int | None = None
        self._probing = False
        """A probe raised the limit and no 429 has come since."""
        self._taken = 0
        self._started = 0
        self._interactive_started = 0
        self._batch_paced_until = 0
        self._held_before_last: int | None = None
        # When each cooling lease frees up (a heap; in-flight leases are not in it).
        self._expiries: list[int] = []
        # Ordered sets of waiters per class: FIFO, and O(1) removal of a cancelled one.
        self._queues: tuple[collections.OrderedDict[_Waiter, None], ...] = tuple(
            collections.OrderedDict() for _ in _CLASSES
        )
        # By id, not weakly: a loop collected with leases in flight must still give them back.
        self._sides: dict[int, _LoopSide] = {}

    # -- taking and giving back ------------------------------------------------------------

    def side(self, loop: asyncio.AbstractEventLoop) -> _LoopSide:
        side = self._sides.get(id(loop))
        if side is None or side.loop_ref() is not loop:
            self._reap_loops(_now_ns(loop))
            side = self._sides[id(loop)] = _LoopSide(loop)
        return side

    async def acquire(
        self, loop: asyncio.AbstractEventLoop, priority: LeasePriority, max_wait: float | None
    ) -> tuple[_LoopSide, int]:
        """Wait for a lease; its loop's side, and how many leases were held when it was granted
        (what the server may have counted of ours before this request)."""
        rank = _CLASSES.index(priority)
        with self.lock:
            now = _now_ns(loop)
            self._reap(now)
            side = self.side(loop)
            # The fast path is only for an empty queue ahead: a lease that has just expired
            # belongs to the waiters, whose timer may not have run yet.
            if not any(self._queues[: rank + 1]) and self._can_take(rank, now):
                held = self._taken
                self._grant(side, rank, now)
                return side, held
            if max_wait is not None:
                wait_ns = self._estimate(rank, now)
                if wait_ns > _seconds_to_ns(max_wait):
                    raise BudgetExhaustedError(retry_after=wait_ns / _NS_PER_S)
            waiter = _Waiter(loop.create_future(), side, rank)
            self._queues[rank][waiter] = None
            side.waiting += 1
            self._dispatch(loop, now)
        try:
            if max_wait is None:
                await waiter.future
            else:
                # Not a timeout around the future: that would cancel it, and a lease that frees
                # at this very instant (its timer not run yet) would pass it by.
                await asyncio.wait((waiter.future,), timeout=max_wait)
                if not waiter.granted:
                    with self.lock:
                        self._dispatch(loop, _now_ns(loop))
                        if not waiter.granted:
                            left = self._estimate(rank, _now_ns(loop))
                            raise BudgetExhaustedError(retry_after=left / _NS_PER_S)
        except BaseException:
            with self.lock:
                if waiter.granted:
                    # Granted, but cancelled before it could run: the request was never sent.
                    self._give_back(waiter)
                else:
                    self._queues[rank].pop(waiter, None)
                    side.waiting -= 1
                self._dispatch(loop, _now_ns(loop))
            raise
        return side, waiter.held

    def release(self, loop: asyncio.AbstractEventLoop, side: _LoopSide, held: int) -> None:
        """A request ended; ``held`` is what :meth:`acquire` said of its lease."""
        with self.lock:
            now = _now_ns(loop)
            heapq.heappush(self._expiries, now + self._hold_ns)
            side.in_flight -= 1
            self._held_before_last = held
            if any(self._queues) and not loop.is_closed():
                self._dispatch(loop, now)

    def _class_limit(self, rank: int) -> int:
        """Leases a class may have taken in all: batch calls leave the reserve to the others."""
        return max(1, self._limit - self._reserve) if rank == 2 else self._limit

    def _can_take(self, rank: int, now: int) -> bool:
        if rank == 2 and now < self._batch_paced_until:
            return False
        return now >= self.blocked_until and self._taken < self._class_limit(rank)

    def _grant(self, side: _LoopSide, rank: int, now: int) -> None:
        self._taken += 1
        self._started += 1
        self._interactive_started += rank < 2
        side.in_flight += 1
        if self._taken >= self._class_limit(2):
            # The budget is in full use: batch calls now go at most one per hold / limit, less
            # one for each other call, so that the leases free up evenly and an interactive
            # call waits at most for the next one (leases free up one hold after they were
            # taken, so a burst, once in a budget used to the full, would leave a hole in
            # every later window).
            spacing = self._hold_ns // self._limit
            start = now if rank == 2 else max(now, self._batch_paced_until)
            self._batch_paced_until = start + spacing

    def _give_back(self, waiter: _Waiter) -> None:
        """Undo the grant of a lease whose request was never sent."""
        self._taken -= 1
        self._started -= 1
        self._interactive_started -= waiter.rank < 2
        waiter.side.in_flight -= 1

    def _reap(self, now: int) -> None:
        while self._expiries and self._expiries[0] <= now:
            heapq.heappop(self._expiries)
            self._taken -= 1
        if self._probe_at is not None and now >= self._probe_at:
            self._probe(now)

    def _reap_loops(self, now: int) -> None:
        for key, side in list(self._sides.items()):
            other = side.loop_ref()
            if other is None or other.is_closed():
                self._drop(side, now)
                del self._sides[key]

    def _drop(self, side: _LoopSide, now: int) -> None:
        """A loop closed under its leases: they may have been counted, so they cool from now;
        its waiters can never run."""
        for _ in range(side.in_flight):
            heapq.heappush(self._expiries, now + self._hold_ns)
        side.in_flight = 0
        for queue in self._queues:
            for waiter in [w for w in queue if w.side is side]:
                del queue[waiter]
        side.waiting = 0

    def _estimate(self, rank: int, now: int) -> int:
        """Nanoseconds, at least, before a new waiter of class ``rank`` gets a lease.

        Everyone queued in its class or a higher one goes first. A lease in flight frees up
        one hold after its reply, at the earliest one hold from now; a lease taken again after
        it frees is free again one hold later.
        """
        ahead = sum(len(queue) for queue in self._queues[: rank + 1])
        limit = self._class_limit(rank)
        need = ahead + 1 - (limit - self._taken)  # leases that must free up first
        at = now
        if need > 0:
            frees = sorted(self._expiries)
            frees += [now + self._hold_ns] * (self._taken - len(frees))
            if need <= len(frees):
                at = frees[need - 1]
            else:
                rounds = -(-(need - len(frees)) // limit)
                at = (frees[-1] if frees else now) + rounds * self._hold_ns
        return max(at, self.blocked_until) - now

    def _dispatch(self, loop: asyncio.AbstractEventLoop, now: int) -> None:
        """Grant every free lease to the waiters first in line; call with ``lock`` held."""
        self._reap_loops(now)
        self._reap(now)
        for rank, queue in enumerate(self._queues):
            while queue and self._can_take(rank, now):
                waiter, _ = queue.popitem(last=False)
                side = waiter.side
                side.waiting -= 1
                if waiter.future.cancelled():
                    # Cancelled a moment ago; its task has not yet run to remove itself.
                    continue
                waiter.granted = True
                waiter.held = self._taken
                self._grant(side, rank, now)
                if side.loop_ref() is loop:
                    waiter.future.set_result(None)
                else:
                    self._hand_over(waiter, now)
            if queue:
                break  # a class that must wait holds back every class below it
        self._schedule(loop, now)

    def _hand_over(self, waiter: _Waiter, now: int) -> None:
        other = waiter.side.loop_ref()
        try:
            if other is None:
                raise RuntimeError("the loop is gone")
            other.call_soon_threadsafe(_resolve, waiter.future)
        except RuntimeError:  # its loop closed meanwhile: the lease goes back
            waiter.granted = False
            self._give_back(waiter)

    # -- timers ------------------------------------------------------------------------------

    def _next_moment(self) -> int | None:
        """When a waiter could next be served: a lease frees up, the block ends, or a probe
        raises the limit. ``None`` when no one waits, or when every lease is in flight and no
        probe is due (then the next release dispatches)."""
        rank = next((rank for rank, queue in enumerate(self._queues) if queue), None)
        if rank is None:
            return None
        need = self._taken - self._class_limit(rank) + 1  # leases that must free up first
        opens = self.blocked_until
        if rank == 2:
            opens = max(opens, self._batch_paced_until)
        if need <= 0:
            return opens
        moments = [self._probe_at] if self._probe_at is not None else []
        if need == 1 and self._expiries:
            moments.append(self._expiries[0])
        elif need <= len(self._expiries):
            moments.append(heapq.nsmallest(need, self._expiries)[-1])
        return max(min(moments), opens) if moments else None

    def _schedule(self, loop: asyncio.AbstractEventLoop, now: int) -> None:
        """Keep each loop with waiters on a timer at the next moment one could be served."""
        moment = self._next_moment()
        for side in list(self._sides.values()):
            other = side.loop_ref()
            at = moment if side.waiting else None
            if at == side.timer_at or other is None:
                continue
            if other is loop:
                self._set_timer(loop, side, at)
            else:
                with contextlib.suppress(RuntimeError):  # closed meanwhile: reaped later
                    other.call_soon_threadsafe(self._retime, other)

    def _set_timer(self, loop: asyncio.AbstractEventLoop, side: _LoopSide, at: int | None) -> None:
        if side.timer is not None:
            side.timer.cancel()
        side.timer_at = at
        side.timer = None if at is None else loop.call_at(_ceil_us(at), self._on_timer, loop)

    def _retime(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            self._schedule(loop, _now_ns(loop))

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            side = self._sides.get(id(loop))
            if side is not None and side.loop_ref() is loop:
                side.timer = side.timer_at = None
            self._dispatch(loop, _now_ns(loop))

    # -- the server's view -------------------------------------------------------------------

    def block(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        until = _now_ns(loop) + check_block(seconds)
        if self._adaptive:
            # One margin more: the requests of ours that the server refused as the block began
            # (in flight when the first 429 came) then drop out of its window before the next
            # burst, instead of passing for a lower limit.
            until += self._margin_ns
        with self.lock:
            now = _now_ns(loop)
            self._reap(now)
            if self._adaptive and now >= self.blocked_until:
                # A 429 outside a known block: the server counted more than it allows, and of
                # ours at most the leases held when the refused request got its lease (its own
                # was the last given back: nothing runs between its reply and this call).
                # Not the leases held now: in the burst that follows a block, most were taken
                # after it.
                before = self._held_before_last
                evidence = len(self._expiries) - 1 if before is None else before
                self._lower(max(1, evidence), now, until)
            self.blocked_until = max(self.blocked_until, until)
            self._dispatch(loop, now)

    def observe(self, loop: asyncio.AbstractEventLoop, budget: ServerBudget) -> None:
        if not self._adaptive:
            return
        with self.lock:
            now = _now_ns(loop)
            self._reap(now)
            if budget.limit is not None and 0 < budget.limit < self._ceiling:
                self._ceiling = budget.limit
                self._limit = min(self._limit, budget.limit)
            if budget.remaining is not None:
                allowed = self._taken + budget.remaining
                if allowed < self._limit:
                    self._lower(max(1, allowed), now, now)
                if budget.remaining == 0 and budget.reset:
                    until = now + _seconds_to_ns(budget.reset)
                    self.blocked_until = max(self.blocked_until, until)
            self._dispatch(loop, now)

    def _lower(self, limit: int, now: int, resumes: int) -> None:
        """The server allows only ``limit`` of ours: keep to it, and probe up after a while
        (twice as long a while after a probe that ended like this)."""
        if self._probing:
            self._interval = min(PROBE_LONGEST, self._interval * 2)
        self._limit = min(self._limit, limit)
        self._step = 1
        self._probing = False
        self._probe_at = resumes + self._interval * self._hold_ns

    def _probe(self, now: int) -> None:
        """One lease more, or twice the last raise when that one passed without a 429."""
        if self._probing:
            self._interval = max(PROBE_FIRST, self._interval // 2)
            self._step *= 2
        if self._limit >= self._ceiling:
            self._probe_at = None
            self._probing = False
            return
        self._limit = min(self._ceiling, self._limit + self._step)
        self._probing = True
        self._probe_at = now + self._interval * self._hold_ns

    def stats(self) -> LimiterStats:
        now = self.now_outside()
        with self.lock:
            if now is not None:
                self._reap(now)
            # Without a clock to read, the leases cooling then have cooled by now.
            cooled = len(self._expiries) if now is None else 0
            return LimiterStats(
                started=self._started,
                interactive_started=self._interactive_started,
                in_flight=self._taken - len(self._expiries),
                waiting=sum(len(queue) for queue in self._queues),
                held=self._taken - cooled,
                blocked_for=self.left_at(now),
                limit=self._limit,
            )


_DEFAULT_RATE_LIMIT = RateLimit()


class LeaseLimiter(_Bound[_LeasePool], Limiter):
    """The in-process lease limiter: at most ``config.requests`` leases, each held while its
    request is in flight and for ``config.hold`` seconds after it ends.

    Waiters are served first come, first served within their class: the token request ahead of
    everything, interactive calls ahead of batch calls. ``config.reserve`` leases are never
    given to batch calls. No lease is reserved for the token request: that would waste 1 % of
    the budget, and the deadlock it would prevent cannot happen as long as nobody waits for a
    token while holding a lease.

    One limiter serves every loop of the process at once (the state is guarded by a lock), so
    clients of one process that talk to one host share one budget (:func:`shared_limiter`), as
    the server counts per IP. Nothing is bound to an event loop until first use. Every loop of
    the monotonic clock (asyncio's, uvloop's) shares its leases and block, at once or in turn (a
    second ``asyncio.run``); a loop of another clock (a virtual-time test) starts afresh (all
    leases free, no block), as a forked child does.
    """

    def __init__(self, config: RateLimit = _DEFAULT_RATE_LIMIT) -> None:
        self._config = config
        self._state: _LeasePool | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"

    @property
    def config(self) -> RateLimit:
        return self._config

    @property
    def stats(self) -> LimiterStats:
        pool = self._state
        if pool is None or pool._pid != os.getpid():
            return LimiterStats(limit=self._config.requests)
        return pool.stats()

    def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        return _PoolLease(self, priority, max_wait)

    async def block(self, seconds: float) -> None:
        loop, pool = self._bind()
        pool.block(loop, seconds)

    async def blocked_for(self) -> float:
        loop, pool = self._bind()
        return pool.blocked_for(loop)

    async def observe(self, budget: ServerBudget) -> None:
        loop, pool = self._bind()
        pool.observe(loop, budget)

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, _LeasePool]:
        return self._bind_state(lambda loop: _LeasePool(loop, self._config))


class UnlimitedLimiter(_Bound[_Gate], Limiter):
    """No pacing (``rate_limit=None``), but a server 429 still pauses every request.

    Shared by the loops of a process the same way as :class:`LeaseLimiter`.
    """

    def __init__(self) -> None:
        self._state: _Gate | None = None
        self._lease = _GateLease(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def stats(self) -> LimiterStats:
        gate = self._state
        if gate is None or gate._pid != os.getpid():
            return LimiterStats()
        return LimiterStats(blocked_for=gate.left_at(gate.now_outside()))

    def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        if max_wait is None:
            return self._lease
        return _GateLease(self, max_wait)

    async def block(self, seconds: float) -> None:
        loop, gate = self._bind()
        gate.block(loop, seconds)

    async def blocked_for(self) -> float:
        loop, gate = self._bind()
        return gate.blocked_for(loop)

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, _Gate]:
        return self._bind_state(_Gate)


class _PoolLease:
    """One attempt's lease (a plain class: this runs once per request, so it must be cheap)."""

    __slots__ = ("_held", "_limiter", "_loop", "_max_wait", "_pool", "_priority", "_side")

    def __init__(
        self, limiter: LeaseLimiter, priority: LeasePriority, max_wait: float | None
    ) -> None:
        self._limiter = limiter
        self._priority = priority
        self._max_wait = max_wait

    async def __aenter__(self) -> None:
        self._loop, self._pool = self._limiter._bind()
        self._side, self._held = await self._pool.acquire(
            self._loop, self._priority, self._max_wait
        )

    async def __aexit__(self, *_: object) -> None:
        self._pool.release(self._loop, self._side, self._held)


class _GateLease:
    """Waits out a server block; nothing to give back, so one serves every request."""

    __slots__ = ("_limiter", "_max_wait")

    def __init__(self, limiter: UnlimitedLimiter, max_wait: float | None = None) -> None:
        self._limiter = limiter
        self._max_wait = max_wait

    async def __aenter__(self) -> None:
        loop, gate = self._limiter._bind()
        if gate.blocked_until > _now_ns(loop):
            left = gate.blocked_for(loop)
            if self._max_wait is not None and left > self._max_wait:
                raise BudgetExhaustedError(retry_after=left)
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


_SHARED: dict[tuple[str, RateLimit], LeaseLimiter] = {}


def shared_limiter(origin: str, config: RateLimit) -> LeaseLimiter:
    """The limiter every client of this process uses for ``origin`` with ``config``.

    The server counts requests per IP, so two clients of one process talking to one host must
    draw on one budget, whichever loop or thread they run on (an async client on a web server's
    loop and a sync client on the portal's loop alike). Callable from anywhere, before any
    loop runs.
    """
    key = (origin_of(origin), config)
    with _STATE_LOCK.get():
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = LeaseLimiter(config)
        return limiter
