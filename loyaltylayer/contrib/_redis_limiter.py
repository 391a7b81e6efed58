"""One lease budget shared through Redis by every process and host behind one egress IP.

The algorithm is the in-memory lease limiter's, moved into Redis: a sorted set holds one member
per lease, scored with the time it stops counting. Every operation is one Lua script, so it is
atomic, and every script reads the time from Redis ``TIME`` only: hosts whose clocks disagree by
minutes still agree on when a lease ends.

Redis 5 or newer is required (scripts that write after reading ``TIME``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Self

import attrs
import redis.asyncio as aioredis

from .._errors import ConfigurationError
from .._loops import LoopBound, leave_open
from .._ratelimit import LeaseLimiter, Limiter, RateLimit, check_block, origin_of
from .._retry_after import cap_retry_after
from ._redis_connection import UNAVAILABLE, RedisClients, RedisUnavailableError, open_client

__all__ = ["RedisLimiterStats", "RedisRateLimiter"]

_log = logging.getLogger(__name__)

_US = 1_000_000
_JITTER = 0.005
"""Up to 5 ms added to each sleep, so processes told the same wait do not poll in lockstep."""
_MIN_SLEEP = 0.001
_PRIORITY_GRACE = 1.0
"""How long a priority waiter's claim on the reserve outlives its next expected poll.

A waiter that vanished (crashed, cancelled) costs normal requests one lease for at most this
long after its last poll."""

# Every script starts here: the Redis clock in microseconds, and a way to keep a sorted set
# alive exactly as long as its latest member.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function expire_with_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.ceil((tonumber(last[2]) - now) / 1000) + 1)
  end
end
"""

_ACQUIRE = (
    _PRELUDE
    + """
-- KEYS: leases, blocked, priority waiters.
-- ARGV: limit, priority (1/0), id, in-flight TTL us, hold us, priority grace us.
-- Returns {1, 0} when lease `id` is taken, else {0, us before one can be free}.
local limit, priority, id = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3]
local ttl, hold, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local wait = tonumber(redis.call('GET', KEYS[2]) or '0') - now
if wait <= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if not priority and redis.call('ZCARD', KEYS[3]) > 0 then limit = limit - 1 end
  if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now + ttl, id)
    expire_with_last(KEYS[1])
    if priority then redis.call('ZREM', KEYS[3], id) end
    return {1, 0}
  end
  -- A lease still in flight ends no sooner than now + hold: never sleep past a free slot.
  wait = hold
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then wait = math.min(tonumber(first[2]) - now, hold) end
end
if priority then
  redis.call('ZADD', KEYS[3], now + wait + grace, id)
  expire_with_last(KEYS[3])
end
return {0, wait}
"""
)

_RELEASE = (
    _PRELUDE
    + """
-- KEYS: leases. ARGV: id, hold us.
-- The request just ended, so its lease counts until now + hold, even if it had outlived its
-- in-flight TTL and expired meanwhile. Returns 0 in that case, 1 otherwise.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
expire_with_last(KEYS[1])
if score and tonumber(score) > now then return 1 end
return 0
"""
)

_BLOCK = (
    _PRELUDE
    + """
-- KEYS: blocked. ARGV: us from now. A shorter block never shortens a longer one.
local ends = now + tonumber(ARGV[1])
if ends > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', ends), 'PX', math.ceil(tonumber(ARGV[1]) / 1000))
end
"""
)

_BLOCKED_FOR = (
    _PRELUDE
    + """
-- KEYS: blocked. Returns the us left of the block, 0 when there is none.
return math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0)
"""
)


@attrs.frozen(kw_only=True)
class RedisLimiterStats:
    """Counters of one :class:`RedisRateLimiter` (this process only), for logs and benchmarks."""

    started: int
    """Leases this process took through Redis."""
    in_flight: int
    """Leases of this process whose request has not ended yet."""
    waiting: int
    """Coroutines of this process waiting for a lease."""
    polls: int
    """Acquire scripts this process ran: about one per lease it took or saw freed."""
    overran: int
    """Requests that outlived their in-flight TTL: ``request_timeout`` is shorter than the SDK's."""
    local: bool
    """Redis became unreachable and the process-local fallback limiter is in use."""


@attrs.frozen(kw_only=True)
class _Keys:
    leases: str
    blocked: str
    priority: str


def _normalize_origin(origin: str) -> str:
    try:
        return origin_of(origin)
    except ValueError:
        raise ConfigurationError(
            "bind() needs the API's origin, an http(s) URL with a host"
        ) from None


class RedisRateLimiter(Limiter):
    """A :class:`~loyaltylayer.Limiter` whose budget is shared through Redis.

    Every process and host that sends through the same egress IP must use the same Redis, the
    same :class:`RateLimit` and the same ``egress_id``; they then share one budget of
    ``requests`` leases per ``per`` seconds, exactly like coroutines sharing an in-memory limiter.

    Priority (the token request) may take all N leases; while a priority request waits, normal
    requests may only take N-1, so the next lease that frees goes to it. The reserve exists only
    while someone needs it: without a waiting token request, batches use all N.

    A lease in flight counts for ``hold + request_timeout`` seconds unless released sooner, so a
    worker that dies mid-request gives its lease back by itself. ``request_timeout`` must be at
    least the SDK's timeout for one attempt.

    Waiting costs Redis one script call per freed lease and process: the coroutines of a process
    take turns (one asks, the rest wait on a lock), and the one asking sleeps exactly until the
    earliest moment a lease can be free, plus a few milliseconds of jitter.

    If Redis cannot be reached, ``on_unavailable="fail"`` (the default) raises
    :class:`RedisUnavailableError`. ``"local"`` logs a warning and falls back, for the rest of
    this limiter's life, to an in-memory limiter with ``requests // expected_workers`` leases.
    A fallback after leases were taken through Redis starts blocked for one hold, since those
    leases still count at the server.

    The API host is not known when the limiter is built: the SDK calls :meth:`bind` with the
    API's origin before the first lease.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        rate_limit: RateLimit,
        *,
        egress_id: str = "default",
        on_unavailable: Literal["fail", "local"] = "fail",
        expected_workers: int | None = None,
        request_timeout: float = 120.0,
        close_client: bool = False,
    ) -> None:
        if not egress_id or "{" in egress_id or "}" in egress_id:
            raise ConfigurationError("egress_id must be non-empty and contain no braces")
        if on_unavailable not in ("fail", "local"):
            raise ConfigurationError('on_unavailable must be "fail" or "local"')
        self._fallback_rate: RateLimit | None = None
        if on_unavailable == "local":
            if expected_workers is None or expected_workers < 1:
                raise ConfigurationError(
                    'expected_workers (a positive int) is required with on_unavailable="local"'
                )
            if rate_limit.requests // expected_workers < 1:
                raise ConfigurationError(
                    "expected_workers leaves no request per worker in the local fallback"
                )
            self._fallback_rate = attrs.evolve(
                rate_limit, requests=rate_limit.requests // expected_workers
            )
        if not request_timeout > 0:
            raise ConfigurationError("request_timeout must be positive")
        self._redis = RedisClients(client, owner=type(self).__name__, close_client=close_client)
        self._rate = rate_limit
        self._egress_id = egress_id
        self._server = self._redis.server
        self._hold_us = math.ceil(rate_limit.hold * _US)
        self._in_flight_us = math.ceil((rate_limit.hold + request_timeout) * _US)
        self._acquire_script = client.register_script(_ACQUIRE)
        self._release_script = client.register_script(_RELEASE)
        self._block_script = client.register_script(_BLOCK)
        self._blocked_for_script = client.register_script(_BLOCKED_FOR)
        self._origin: str | None = None
        self._keys: _Keys | None = None
        # The coroutines of one loop take turns to poll.
        self._turns = LoopBound(asyncio.Lock, leave_open, what=f"this {type(self).__name__}")
        self._local: Limiter | None = None
        self._started = 0
        self._in_flight = 0
        self._waiting = 0
        self._polls = 0
        self._overran = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        requests: int = 100,
        per: float = 60.0,
        margin: float | None = None,
        egress_id: str = "default",
        on_unavailable: Literal["fail", "local"] = "fail",
        expected_workers: int | None = None,
        request_timeout: float = 120.0,
    ) -> Self:
        """A limiter on the Redis at ``url``, which it owns, opens in each process and event loop
        that uses it, and closes in :meth:`aclose`.

        Nothing is connected yet: :meth:`check` (or the first lease) does.
        """
        limiter = cls(
            open_client(url),
            RateLimit(requests=requests, per=per, margin=margin),
            egress_id=egress_id,
            on_unavailable=on_unavailable,
            expected_workers=expected_workers,
            request_timeout=request_timeout,
            close_client=True,
        )
        limiter._redis.reconnect_to(url)
        return limiter

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._server}, {self._rate!r}, origin={self._origin!r})"

    @property
    def config(self) -> RateLimit:
        return self._rate

    @property
    def stats(self) -> RedisLimiterStats:
        return RedisLimiterStats(
            started=self._started,
            in_flight=self._in_flight,
            waiting=self._waiting,
            polls=self._polls,
            overran=self._overran,
            local=self._local is not None,
        )

    def bind(self, origin: str) -> Self:
        """Pace requests to ``origin`` (``scheme://host[:port]`` of the API); returns ``self``.

        The keys are ``{loyaltylayer:<origin>:<egress_id>}:leases`` (and ``:blocked``,
        ``:priority``), so two APIs, or two egress IPs, never share a budget. Binding again to
        the same origin is a no-op; to another one is an error.
        """
        normalized = _normalize_origin(origin)
        if self._origin is None:
            tag = f"{{loyaltylayer:{normalized}:{self._egress_id}}}"
            self._origin = normalized
            self._keys = _Keys(
                leases=f"{tag}:leases", blocked=f"{tag}:blocked", priority=f"{tag}:priority"
            )
        elif self._origin != normalized:
            raise ConfigurationError(
                f"this RedisRateLimiter paces {self._origin}; use another one for {normalized}"
            )
        return self

    async def check(self) -> None:
        """Make sure Redis answers; raise :class:`RedisUnavailableError` (or fall back) if not."""
        if self._local is None:
            try:
                client = await self._redis.get()
                await self._run(client.ping())
            except RedisUnavailableError as exc:
                await self._fall_back(exc)

    def lease(self, *, priority: bool = False) -> AbstractAsyncContextManager[None]:
        return self._lease(priority)

    @asynccontextmanager
    async def _lease(self, priority: bool) -> AsyncIterator[None]:
        local = self._local
        lease_id = uuid.uuid4().hex
        if local is None:
            try:
                await self._acquire(lease_id, priority)
            except RedisUnavailableError as exc:
                local = await self._fall_back(exc)
        if local is not None:
            async with local.lease(priority=priority):
                yield
            return
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            await self._release(lease_id)

    async def _acquire(self, lease_id: str, priority: bool) -> None:
        self._waiting += 1
        try:
            # A priority request is rare (one token refresh per process), so it polls on its
            # own instead of queueing behind the normal coroutines' turn.
            if priority:
                await self._poll(lease_id, priority=True)
            else:
                turn = await self._turns.get()
                async with turn:
                    await self._poll(lease_id, priority=False)
        finally:
            self._waiting -= 1

    async def _poll(self, lease_id: str, *, priority: bool) -> None:
        keys = self._bound_keys()
        args = (
            self._rate.requests,
            int(priority),
            lease_id,
            self._in_flight_us,
            self._hold_us,
            math.ceil(_PRIORITY_GRACE * _US),
        )
        while True:
            self._polls += 1
            client = await self._redis.get()
            granted, wait_us = await self._run(
                self._acquire_script(
                    keys=[keys.leases, keys.blocked, keys.priority], args=args, client=client
                )
            )
            if granted:
                self._started += 1
                return
            wait = min(max(int(wait_us) / _US, _MIN_SLEEP), self._rate.hold)
            await asyncio.sleep(wait + random.uniform(0.0, _JITTER))

    async def _release(self, lease_id: str) -> None:
        keys = self._bound_keys()
        client = await self._redis.get()
        try:
            in_time = await self._run(
                self._release_script(
                    keys=[keys.leases], args=[lease_id, self._hold_us], client=client
                )
            )
        except RedisUnavailableError as exc:
            # The request is over; the lease ends by itself when its in-flight TTL runs out.
            _log.warning("%s; a lease could not be released and will expire by itself", exc)
            return
        if not in_time:
            self._overran += 1
            _log.warning(
                "a request outlived its lease; raise request_timeout above the SDK's timeout"
            )

    async def block(self, seconds: float) -> None:
        """Block every process sharing this budget; at most ``MAX_RETRY_AFTER`` (15 minutes),
        whoever asks: one bad ``Retry-After`` must not stall the whole fleet for longer."""
        check_block(seconds)
        seconds = cap_retry_after(seconds)
        block_us = -(-check_block(seconds) // 1000)
        if not block_us:
            return
        local = self._local
        if local is None:
            keys = self._bound_keys()
            client = await self._redis.get()
            try:
                await self._run(
                    self._block_script(keys=[keys.blocked], args=[block_us], client=client)
                )
                return
            except RedisUnavailableError as exc:
                local = await self._fall_back(exc)
        await local.block(seconds)

    async def blocked_for(self) -> float:
        local = self._local
        if local is None:
            keys = self._bound_keys()
            client = await self._redis.get()
            try:
                left_us = await self._run(
                    self._blocked_for_script(keys=[keys.blocked], client=client)
                )
                return int(left_us) / _US
            except RedisUnavailableError as exc:
                local = await self._fall_back(exc)
        return await local.blocked_for()

    async def aclose(self) -> None:
        if self._local is not None:
            await self._local.aclose()
        await self._redis.aclose()

    def _bound_keys(self) -> _Keys:
        if self._keys is None:
            raise ConfigurationError(
                "RedisRateLimiter.bind(origin) must be called before the first request"
            )
        return self._keys

    async def _run(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except UNAVAILABLE as exc:
            raise RedisUnavailableError(self._server, exc) from exc

    async def _fall_back(self, exc: RedisUnavailableError) -> Limiter:
        share = self._fallback_rate
        if share is None:
            raise exc
        local = self._local
        if local is None:
            _log.warning(
                "%s; this process now paces itself alone at %d requests per %g s",
                exc,
                share.requests,
                share.per,
            )
            self._local = local = LeaseLimiter(share)
            if self._started:
                await local.block(self._rate.hold)
        return local
