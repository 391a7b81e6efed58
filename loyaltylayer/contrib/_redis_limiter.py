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
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Self

import attrs
import redis.asyncio as aioredis

from .._errors import BudgetExhaustedError, ConfigurationError
from .._loops import LoopBound, leave_open
from .._ratelimit import (
    PROBE_FIRST,
    PROBE_LONGEST,
    LeaseLimiter,
    LeasePriority,
    Limiter,
    LimiterStats,
    RateLimit,
    ServerBudget,
    check_block,
    origin_of,
)
from ._redis_connection import UNAVAILABLE, RedisClients, RedisUnavailableError, open_client

__all__ = ["RedisLimiterStats", "RedisRateLimiter"]

_log = logging.getLogger(__name__)

_US = 1_000_000
_JITTER = 0.005
"""Up to 5 ms added to each batch poller's sleep, so processes told the same wait do not poll in
lockstep. A token request or an interactive call, few and holding a claim on the next lease,
asks again on time."""
_MIN_SLEEP = 0.001
_PRIORITY_GRACE = 1.0
"""How long a waiting token request's or interactive call's claim on the next free lease
outlives its next expected poll.

A waiter that vanished (crashed, cancelled) costs lower classes one lease for at most this long
after its last poll."""
_CLASS = {"token": 0, "interactive": 1, "batch": 2}

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

# The adaptive limit, shared by every process of the budget: a hash of the learned limit and
# when to probe one higher (see loyaltylayer._ratelimit._LeasePool, which follows the same
# rules). Its callers pass ceiling, hold, the first and the longest probe interval (windows).
_ADAPT = """
local function us(n) return string.format('%.0f', n) end
local function keep(key, limit, probe_at, interval, step, probing, hold, longest)
  redis.call('HSET', key, 'limit', limit, 'probe_at', us(probe_at), 'interval', interval,
    'step', step, 'probing', probing)
  redis.call('PEXPIRE', key, math.ceil((probe_at - now + longest * hold) / 1000))
end
local function adapted(key, ceiling, hold, first, longest)
  local a = redis.call('HMGET', key, 'limit', 'probe_at', 'interval', 'step', 'probing')
  if not a[1] then return ceiling end
  local limit, probe_at = tonumber(a[1]), tonumber(a[2])
  if now < probe_at then return limit end
  local interval, step = tonumber(a[3]), tonumber(a[4])
  if a[5] == '1' then
    interval = math.max(first, math.floor(interval / 2))
    step = step * 2
  end
  if limit >= ceiling then
    redis.call('DEL', key)
    return ceiling
  end
  limit = math.min(ceiling, limit + step)
  keep(key, limit, now + interval * hold, interval, step, '1', hold, longest)
  return limit
end
local function lower(key, limit, resumes, ceiling, hold, first, longest)
  local current = adapted(key, ceiling, hold, first, longest)
  local a = redis.call('HMGET', key, 'interval', 'probing')
  local interval = tonumber(a[1] or first)
  if a[2] == '1' then interval = math.min(longest, interval * 2) end
  keep(key, math.min(current, limit), resumes + interval * hold, interval, 1, '0', hold, longest)
end
"""

_ACQUIRE = (
    _PRELUDE
    + _ADAPT
    + """
-- KEYS: leases, blocked, token claims, interactive claims, adaptive limit, batch pace.
-- ARGV: ceiling, class (0 token, 1 interactive, 2 batch), id, in-flight TTL us, hold us,
--       claim grace us, reserve, adaptive (1/0), first and longest probe interval.
-- Returns {1, 0, leases held before it, limit, 0} when lease `id` is taken, else {0, us to
-- sleep before asking again, us at least before a lease can be this class's, limit, us of
-- block left}.
local ceiling, class, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ttl, hold, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reserve, first, longest = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[10])
local limit = ceiling
if ARGV[8] == '1' then limit = adapted(KEYS[5], ceiling, hold, first, longest) end
local blocked = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') - now, 0)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
-- Every waiting claim of a higher class holds one lease back from this one.
local allowed = limit
if class == 2 then allowed = math.max(1, limit - reserve) end
if class >= 1 then allowed = allowed - redis.call('ZCARD', KEYS[3]) end
if class == 2 then allowed = allowed - redis.call('ZCARD', KEYS[4]) end
local held = redis.call('ZCARD', KEYS[1])
-- With the budget in full use, batch calls go at most one per hold / limit, so the leases
-- free up evenly (see loyaltylayer._ratelimit._LeasePool._grant).
local paced = 0
if class == 2 then paced = math.max(tonumber(redis.call('GET', KEYS[6]) or '0') - now, 0) end
if blocked == 0 and paced == 0 and held < allowed then
  redis.call('ZADD', KEYS[1], now + ttl, id)
  expire_with_last(KEYS[1])
  if class < 2 then redis.call('ZREM', KEYS[3 + class], id) end
  if class == 2 and held + 1 >= allowed then
    local spacing = math.floor(hold / limit)
    redis.call('SET', KEYS[6], us(now + spacing), 'PX', math.ceil(spacing / 1000) + 1)
  end
  return {1, 0, held, limit, 0}
end
-- A lease in flight ends no sooner than now + hold: never sleep past a free slot.
local sleep, estimate = hold, hold
local firsts = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if firsts[2] then sleep = math.min(tonumber(firsts[2]) - now, hold) end
local need = held - allowed + 1
if need >= 1 and need <= held then
  local nth = redis.call('ZRANGE', KEYS[1], need - 1, need - 1, 'WITHSCORES')
  estimate = math.min(tonumber(nth[2]) - now, hold)
end
if held < allowed then sleep = paced end
if blocked > 0 then
  sleep = blocked
  estimate = math.max(estimate, blocked)
end
if class < 2 then
  redis.call('ZADD', KEYS[3 + class], now + sleep + grace, id)
  expire_with_last(KEYS[3 + class])
end
return {0, sleep, estimate, limit, blocked}
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
    + _ADAPT
    + """
-- KEYS: blocked, leases, adaptive limit. ARGV: us from now, adaptive (1/0), ceiling, hold us,
-- first and longest probe interval, leases held when the refused request got its lease (-1:
-- not known). A shorter block never shortens a longer one.
-- A 429 outside a known block means the server counted more than it allows, and of ours at
-- most the leases held when the refused request got its lease; unknown, at most the requests
-- answered by now (a lease in flight is scored past now + hold) less the refused one. The
-- shared limit drops to that.
local ends = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] == '1' and now >= current then
  local before = tonumber(ARGV[7])
  if before < 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    before = redis.call('ZCOUNT', KEYS[2], '-inf', now + tonumber(ARGV[4])) - 1
  end
  lower(KEYS[3], math.max(1, before), ends, tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5]), tonumber(ARGV[6]))
end
if ends > current then
  redis.call('SET', KEYS[1], us(ends), 'PX', math.ceil(tonumber(ARGV[1]) / 1000))
end
"""
)

_OBSERVE = (
    _PRELUDE
    + _ADAPT
    + """
-- KEYS: leases, adaptive limit, blocked. ARGV: ceiling, hold us, first and longest probe
-- interval, the server's limit, remaining and reset us (-1: not sent).
-- Standard rate-limit headers: a lower limit, or fewer remaining than the leases free, mean
-- the server allows fewer of ours; none remaining pauses everyone until the reset.
local ceiling, hold = tonumber(ARGV[1]), tonumber(ARGV[2])
local first, longest = tonumber(ARGV[3]), tonumber(ARGV[4])
local server, remaining, reset = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local limit = adapted(KEYS[2], ceiling, hold, first, longest)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local allowed = limit
if server > 0 then allowed = math.min(allowed, server) end
if remaining >= 0 then
  allowed = math.min(allowed, redis.call('ZCARD', KEYS[1]) + remaining)
  if remaining == 0 and reset > 0 then
    local ends = now + reset
    if ends > tonumber(redis.call('GET', KEYS[3]) or '0') then
      redis.call('SET', KEYS[3], us(ends), 'PX', math.ceil(reset / 1000))
    end
  end
end
if allowed < limit then
  lower(KEYS[2], math.max(1, allowed), now, ceiling, hold, first, longest)
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
class RedisLimiterStats(LimiterStats):
    """Counters of one :class:`RedisRateLimiter` (this process only), for logs and benchmarks.

    ``started``, ``in_flight`` and ``waiting`` are this process's; ``held`` is its leases in
    flight (the cooling ones are in Redis); ``limit`` and ``blocked_for`` are the shared
    budget's as last seen.
    """

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
    token: str
    interactive: str
    adaptive: str
    pace: str


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

    Waiters are served by class, across processes: each waiting token request holds one lease
    back from interactive and batch calls, and each waiting interactive call one lease back from
    batch calls, so the next lease that frees goes to it. That claim exists only while someone
    waits: without them, batches use all N (less ``RateLimit.reserve``, which only interactive
    calls and the token request may take). With ``RateLimit.adaptive``, the limit learned from
    a 429 (or from rate-limit headers) is kept in Redis and shared by every process.

    A lease in flight counts for ``hold + request_timeout`` seconds unless released sooner, so a
    worker that dies mid-request gives its lease back by itself. ``request_timeout`` must be at
    least the SDK's timeout for one attempt.

    Waiting costs Redis one script call per freed lease and process: the batch coroutines of a
    process take turns (one asks, the rest wait on a lock; token requests and interactive calls
    ask on their own), and the one asking sleeps exactly until the earliest moment a lease can
    be free, plus a few milliseconds of jitter.

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
        self._observe_script = client.register_script(_OBSERVE)
        self._origin: str | None = None
        self._keys: _Keys | None = None
        # The coroutines of one loop take turns to poll.
        self._turns = LoopBound(asyncio.Lock, leave_open, what=f"this {type(self).__name__}")
        self._limit = rate_limit.requests
        self._held_before_last = -1
        """Leases held when the lease last given back was granted (-1: none yet): evidence of
        what the server counted, should its request have got a 429."""
        self._blocked_until = 0.0  # time.monotonic() when the block last seen ends
        self._local: Limiter | None = None
        self._started = 0
        self._interactive_started = 0
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
        reserve: int = 0,
        adaptive: bool = True,
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
            RateLimit(
                requests=requests, per=per, margin=margin, reserve=reserve, adaptive=adaptive
            ),
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
            interactive_started=self._interactive_started,
            in_flight=self._in_flight,
            waiting=self._waiting,
            held=self._in_flight,
            blocked_for=max(0.0, self._blocked_until - time.monotonic()),
            limit=self._limit,
            polls=self._polls,
            overran=self._overran,
            local=self._local is not None,
        )

    def bind(self, origin: str) -> Self:
        """Pace requests to ``origin`` (``scheme://host[:port]`` of the API); returns ``self``.

        The keys are ``{loyaltylayer:<origin>:<egress_id>}:leases`` (and ``:blocked``,
        ``:priority``, ``:interactive``, ``:adaptive``, ``:pace``), so two APIs, or two egress
        IPs, never share a budget. Binding again to the same origin is a no-op; to another one
        is an error.
        """
        normalized = _normalize_origin(origin)
        if self._origin is None:
            tag = f"{{loyaltylayer:{normalized}:{self._egress_id}}}"
            self._origin = normalized
            self._keys = _Keys(
                leases=f"{tag}:leases",
                blocked=f"{tag}:blocked",
                token=f"{tag}:priority",
                interactive=f"{tag}:interactive",
                adaptive=f"{tag}:adaptive",
                pace=f"{tag}:pace",
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

    def lease(
        self, *, priority: LeasePriority = "interactive", max_wait: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        return self._lease(priority, max_wait)

    @asynccontextmanager
    async def _lease(self, priority: LeasePriority, max_wait: float | None) -> AsyncIterator[None]:
        local = self._local
        lease_id = uuid.uuid4().hex
        held = -1
        if local is None:
            try:
                held = await self._acquire(lease_id, priority, max_wait)
            except RedisUnavailableError as exc:
                local = await self._fall_back(exc)
        if local is not None:
            async with local.lease(priority=priority, max_wait=max_wait):
                yield
            return
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._held_before_last = held
            await self._release(lease_id)

    async def _acquire(self, lease_id: str, priority: LeasePriority, max_wait: float | None) -> int:
        """Take lease ``lease_id``; how many leases were held when it was granted."""
        self._waiting += 1
        try:
            # Token requests and interactive calls are few and must not queue behind the batch
            # coroutines' turn: each polls on its own. The batch coroutines of one loop take
            # turns to poll.
            if priority != "batch":
                return await self._poll(lease_id, priority, max_wait)
            turn = await self._turns.get()
            async with turn:
                return await self._poll(lease_id, priority, max_wait)
        finally:
            self._waiting -= 1

    async def _poll(self, lease_id: str, priority: LeasePriority, max_wait: float | None) -> int:
        keys = self._bound_keys()
        rate = self._rate
        args = (
            rate.requests,
            _CLASS[priority],
            lease_id,
            self._in_flight_us,
            self._hold_us,
            math.ceil(_PRIORITY_GRACE * _US),
            rate.reserve,
            int(rate.adaptive),
            PROBE_FIRST,
            PROBE_LONGEST,
        )
        loop = asyncio.get_running_loop()
        deadline = None if max_wait is None else loop.time() + max_wait
        while True:
            self._polls += 1
            client = await self._redis.get()
            reply = await self._run(
                self._acquire_script(
                    keys=[
                        keys.leases,
                        keys.blocked,
                        keys.token,
                        keys.interactive,
                        keys.adaptive,
                        keys.pace,
                    ],
                    args=args,
                    client=client,
                )
            )
            granted, sleep_us, estimate_us, limit, blocked_us = (int(value) for value in reply)
            self._limit = limit
            self._blocked_until = time.monotonic() + blocked_us / _US
            if granted:
                self._started += 1
                self._interactive_started += priority != "batch"
                return estimate_us  # for a granted lease: the leases held before it
            wait = min(max(sleep_us / _US, _MIN_SLEEP), self._rate.hold)
            if deadline is not None:
                left = deadline - loop.time()
                if estimate_us / _US > left:
                    await self._withdraw(priority, lease_id)
                    raise BudgetExhaustedError(retry_after=estimate_us / _US)
                wait = min(wait, left)
            jitter = random.uniform(0.0, _JITTER) if priority == "batch" else 0.0
            await asyncio.sleep(wait + jitter)

    async def _withdraw(self, priority: LeasePriority, lease_id: str) -> None:
        """A waiter that gives up takes back its claim at once, instead of after its grace."""
        keys = self._bound_keys()
        claims = {"token": keys.token, "interactive": keys.interactive}.get(priority)
        if claims is not None:
            client = await self._redis.get()
            await self._run(client.zrem(claims, lease_id))

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
        block_us = -(-check_block(seconds) // 1000)
        if not block_us:
            return
        if self._rate.adaptive:
            # One margin more, as the in-process limiter does: the requests the server refused
            # as the block began leave its window before the next burst.
            block_us += self._hold_us - math.ceil(self._rate.per * _US)
        local = self._local
        if local is None:
            keys = self._bound_keys()
            client = await self._redis.get()
            rate = self._rate
            try:
                await self._run(
                    self._block_script(
                        keys=[keys.blocked, keys.leases, keys.adaptive],
                        args=[
                            block_us,
                            int(rate.adaptive),
                            rate.requests,
                            self._hold_us,
                            PROBE_FIRST,
                            PROBE_LONGEST,
                            self._held_before_last,
                        ],
                        client=client,
                    )
                )
                self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
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
                self._blocked_until = time.monotonic() + int(left_us) / _US
                return int(left_us) / _US
            except RedisUnavailableError as exc:
                local = await self._fall_back(exc)
        return await local.blocked_for()

    async def observe(self, budget: ServerBudget) -> None:
        if not self._rate.adaptive:
            return
        local = self._local
        if local is not None:
            await local.observe(budget)
            return
        keys = self._bound_keys()
        unsent = -1
        args = [
            self._rate.requests,
            self._hold_us,
            PROBE_FIRST,
            PROBE_LONGEST,
            unsent if budget.limit is None else budget.limit,
            unsent if budget.remaining is None else budget.remaining,
            unsent if budget.reset is None else math.ceil(budget.reset * _US),
        ]
        client = await self._redis.get()
        try:
            await self._run(
                self._observe_script(
                    keys=[keys.leases, keys.adaptive, keys.blocked], args=args, client=client
                )
            )
        except RedisUnavailableError as exc:
            await self._fall_back(exc)

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
