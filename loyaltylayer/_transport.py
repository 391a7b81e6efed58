"""The one request pipeline every call of the SDK goes through.

A logical call fixes its correlation id and (for mutations) its idempotency key once, then makes
attempts until one succeeds or the retry policy gives up. Every attempt goes the same way:

    token -> lease -> send -> map -> decide

A bearer token first (nothing waits for a token while holding a lease, see ``Limiter``), then
a lease from the rate limiter, the HTTP exchange, the reply mapped to a :class:`Response` or
to a typed error, and for an error the retry decision: a 429 pauses every call of the client for
as long as the server said, and backoff's loop either gives up or waits (see :func:`_waits`)
before the next attempt.

A call is ``interactive`` (someone waits for it) or ``batch`` (:data:`~._ratelimit.Priority`).
The overall ``deadline`` of an interactive call counts from the call, queueing included: a call
that cannot get a lease in time fails at once, unsent, with :class:`BudgetExhaustedError`. A
batch call's deadline counts from its first lease, so a thousand calls gathered at once do not
time out merely for queueing for the rate limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import json
import logging
import math
import os
import platform
import random
import time
from collections.abc import Generator, Iterator, Mapping
from typing import Any, TypeGuard

import aiohttp
import attrs

from ._auth import IssuedToken, TokenManager
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BudgetExhaustedError,
    ClientClosedError,
    LoyaltyLayerError,
    RateLimitError,
    RequestInProgressError,
    UnexpectedResponseError,
    status_error,
)
from ._graveyard import bury
from ._json import encode_compact
from ._logging import logger
from ._ratelimit import (
    LeasePriority,
    Limiter,
    Priority,
    RateLimit,
    UnlimitedLimiter,
    origin_of,
    server_budget,
    shared_limiter,
)
from ._tokencache import TokenCache
from ._version import __version__

__all__ = ["Response", "Transport", "calls_as", "new_idempotency_key"]

_DEFAULT_RETRY_AFTER = 60.0
_IN_PROGRESS_WAIT = 0.5
_USER_AGENT = (
    f"loyaltylayer-python/{__version__} aiohttp/{aiohttp.__version__} "
    f"python/{platform.python_version()}"
)


_UUID4_CLEARED = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex``, without the cost of building a ``UUID`` object."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEARED | _UUID4_SET:032x}"


def new_idempotency_key() -> str:
    return f"ll_{_uuid4_hex()}"


def _new_correlation_id() -> str:
    return f"ll-{_uuid4_hex()}"


@attrs.define(kw_only=True)
class Response:
    """A successful reply: its JSON body and what the caller needs to know about the request."""

    status: int
    data: Any = attrs.field(repr=False)
    correlation_id: str
    idempotency_key: str | None
    replayed: bool
    attempts: int


def _retry_after(headers: Mapping[str, str], body: Mapping[str, Any]) -> float:
    """The longer of the body's ``retry_after`` and the ``Retry-After`` header (seconds or date)."""
    candidates: list[float] = []
    value = body.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        candidates.append(float(value))
    header = headers.get("Retry-After")
    if header:
        try:
            candidates.append(max(0.0, float(header)))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header).timestamp()
            except (TypeError, ValueError, OverflowError):
                pass
            else:
                candidates.append(max(0.0, when - time.time()))
    finite = [c for c in candidates if math.isfinite(c)]
    return math.ceil(max(finite)) if finite else _DEFAULT_RETRY_AFTER


@attrs.frozen(kw_only=True)
class RequestOptions:
    """How a call is sent: each attempt's timeout, how often it is retried, its deadline and
    its priority."""

    timeout: float
    """Seconds one attempt may take, from its send to the end of its reply."""
    max_retries: int
    """Attempts after the first one that fails retryably."""
    deadline: float | None
    """Seconds the call may take, every retry included; ``None``: no limit. An interactive
    call counts them from the call (queueing for the rate limiter included), a batch call from
    its first lease."""
    priority: Priority = "interactive"
    """Interactive calls take the next free lease ahead of every queued batch call."""


_CALLS_AS: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "loyaltylayer_calls_as", default=None
)


@contextlib.contextmanager
def calls_as(priority: Priority) -> Iterator[None]:
    """Every call started inside (and in tasks started inside) has ``priority``, whatever its
    options say: the enrollment engine's calls and ``batch_create``'s chunks are batch calls,
    made through the same public methods as a user's interactive ones."""
    token = _CALLS_AS.set(priority)
    try:
        yield
    finally:
        _CALLS_AS.reset(token)


@attrs.define(kw_only=True)
class _Call:
    """One logical call: what every attempt sends, and how far the call has got."""

    method: str
    url: str
    path: str
    body: bytes | None
    idempotency_key: str | None
    correlation_id: str
    authenticated: bool
    priority: LeasePriority
    options: RequestOptions
    attempts: int = 0
    deadline_at: float | None = None
    """Loop time the call must end by; set when the call starts (interactive) or when its first
    attempt gets its lease."""
    out_of_time: bool = False
    """Set when the deadline ended the call: no retry can follow."""
    lease_wait: float = 0.0
    """Seconds the call's attempts waited for their leases, in all."""

    def context(self) -> dict[str, Any]:
        """What every error of this call carries."""
        return {
            "method": self.method,
            "path": self.path,
            "correlation_id": self.correlation_id,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
        }


def _waits(call: _Call, base: float, cap: float) -> Generator[float, Any, None]:
    """backoff's wait generator: how long to wait after the error backoff hands it.

    A 429 waits exactly its ``retry_after`` (no jitter: jitter would turn a 60 s block into
    ~20 s and trip it again); ``request_in_progress`` waits a short fixed time; everything else
    waits full-jitter exponential time. A wait that would end past the call's deadline ends the
    retries instead (backoff then raises the last error).
    """
    error = yield 0.0  # backoff starts every generator before the first error
    jittered = 0
    while True:
        if isinstance(error, RateLimitError):
            wait = error.retry_after or _DEFAULT_RETRY_AFTER
        elif isinstance(error, RequestInProgressError):
            wait = _IN_PROGRESS_WAIT
        else:
            wait = random.uniform(0.0, min(cap, base * 2.0**jittered))
            jittered += 1
        if call.deadline_at is not None and (
            asyncio.get_running_loop().time() + wait >= call.deadline_at
        ):
            return
        error = yield wait


def _is_own(error: BaseException, call: _Call) -> TypeGuard[APIError]:
    """Whether ``error`` comes from an attempt of ``call``, not from the token request made for
    it (a call of its own, already retried on its own)."""
    return isinstance(error, APIError) and error.correlation_id == call.correlation_id


def _ends(call: _Call, error: Exception) -> bool:
    """backoff's ``giveup``: whether ``call`` ends with ``error`` instead of being retried."""
    return not _is_own(error, call) or not error.retryable or call.out_of_time


class Transport:
    """Token, limiter, retries, typed errors: everything between a resource method and aiohttp."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_url: str,
        client_id: str,
        client_secret: str,
        options: RequestOptions,
        rate_limit: RateLimit | Limiter | None,
        close_limiter: bool,
        session: aiohttp.ClientSession | None,
        token_cache: TokenCache | None,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._options = options
        self._session_timeout = aiohttp.ClientTimeout(
            total=options.timeout, sock_connect=min(options.timeout, 10.0)
        )
        self._rate_limit = rate_limit
        self._limiter: Limiter | None = None
        self._close_limiter = close_limiter
        self._session = session
        self._session_pid = os.getpid()
        self._owns_session = session is None
        self._closed = False
        self._auth = TokenManager(
            self._fetch_token, cache=token_cache, cache_key=f"{self.auth_url}|{client_id}"
        )
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.attempts = 0
        """Attempts this client has sent (every one took a lease): for progress and tests."""

    def __repr__(self) -> str:
        return f"<Transport base_url={self.base_url!r} client_id={self._client_id!r}>"

    @property
    def options(self) -> RequestOptions:
        """How this client's calls are sent, unless a call says otherwise."""
        return self._options

    @property
    def limiter(self) -> Limiter:
        """The limiter pacing this client (made on first use; outside a coroutine too)."""
        if self._limiter is None:
            if isinstance(self._rate_limit, RateLimit):
                self._limiter = shared_limiter(self.base_url, self._rate_limit)
            elif isinstance(self._rate_limit, Limiter):
                self._limiter = self._rate_limit.bind(origin_of(self.base_url))
            else:
                self._limiter = UnlimitedLimiter()
        return self._limiter

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        idempotency_key: str | None = None,
        authenticated: bool = True,
        token_request: bool = False,
        base_url: str | None = None,
    ) -> Response:
        """Send one logical request, retried as the policy allows; raise the typed error.

        ``token_request`` puts it ahead of every other call waiting for a lease.
        """
        if self._closed:
            raise ClientClosedError("this client is closed")
        options = self._options
        priority: LeasePriority = "token" if token_request else _CALLS_AS.get() or options.priority
        call = _Call(
            method=method,
            url=(base_url or self.base_url) + path,
            path=path,
            body=None if body is None else encode_compact(body).encode(),
            idempotency_key=idempotency_key,
            correlation_id=_new_correlation_id(),
            authenticated=authenticated,
            priority=priority,
            options=options,
        )
        if priority == "interactive" and options.deadline is not None:
            call.deadline_at = asyncio.get_running_loop().time() + options.deadline
        try:
            return await self._attempt(call)
        except LoyaltyLayerError as error:
            if not error.retryable:
                raise
            failure = error
        return await self._retry(call, failure)

    async def _attempt(self, call: _Call, *, fresh_token: bool = False) -> Response:
        """One attempt: token -> lease -> send -> map. A token the server says has expired is
        replaced, and the attempt made again, once."""
        # Before the token: in a forked child, this also drops the parent's token refresh.
        session = self._session_for_loop()
        token = (self._auth.current() or await self._token(call)) if call.authenticated else None
        limiter = self.limiter
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            async with limiter.lease(priority=call.priority, max_wait=self._max_wait(call, asked)):
                now = loop.time()
                call.lease_wait += now - asked
                if call.deadline_at is None and call.options.deadline is not None:
                    call.deadline_at = now + call.options.deadline
                status, headers, raw = await self._send(call, session, token)
                if self._observes:
                    budget = server_budget(headers)
                    if budget is not None:
                        await limiter.observe(budget)
        except BudgetExhaustedError as error:  # from the lease: nothing was sent
            raise self._budget_error(call, error) from None
        try:
            return self._map(call, status, headers, raw)
        except AuthenticationError as error:
            if error.error != "invalid_token" or token is None or fresh_token:
                raise
        logger.info("access token rejected; fetching a new one (%s)", call.correlation_id)
        await self._auth.invalidate(token)
        return await self._attempt(call, fresh_token=True)

    async def _token(self, call: _Call) -> str:
        """A token for an attempt of ``call``; an interactive call waits no longer than its
        deadline for it."""
        if call.priority != "interactive" or call.deadline_at is None:
            return await self._auth.token()
        try:
            async with asyncio.timeout_at(call.deadline_at) as deadline:
                return await self._auth.token()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise self._deadline_error(call) from None

    @staticmethod
    def _max_wait(call: _Call, now: float) -> float | None:
        """How long an attempt of ``call`` may wait for its lease: an interactive call only
        until its deadline (the limiter fails it at once if it can tell it would wait longer)."""
        if call.priority != "interactive" or call.deadline_at is None:
            return None
        return max(0.0, call.deadline_at - now)

    @property
    def _observes(self) -> bool:
        """Whether the limiter learns from rate-limit headers (an adaptive one)."""
        config = self.limiter.config
        return config is not None and config.adaptive

    def _budget_error(self, call: _Call, error: BudgetExhaustedError) -> BudgetExhaustedError:
        """The limiter's ``BudgetExhaustedError``, naming the call it ends."""
        call.out_of_time = True
        wait = error.retry_after or 0.0
        logger.info(
            "%s %s: no lease before the deadline, about %.3f s away (%s)",
            call.method,
            call.path,
            wait,
            call.correlation_id,
        )
        return BudgetExhaustedError(retry_after=wait, **call.context())

    async def _retry(self, call: _Call, failure: LoyaltyLayerError) -> Response:
        """The retry decision for ``failure`` and every later failure of the call, made in
        backoff's loop: :func:`_ends` says whether the call ends, :func:`_waits` how long to wait
        before the next attempt, and ``_after_failure`` pauses every call after a 429.

        The first attempt is made before the loop, so that a call that succeeds costs nothing
        more; the loop's first round hands over that attempt's ``failure`` instead of making one.
        Attempts made in the loop end at the deadline, their token and lease waits included.
        """
        import backoff  # with the first failure: a call that succeeds never needs it

        failures = [failure]

        async def next_attempt() -> Response:
            if failures:
                raise failures.pop()
            if call.deadline_at is None:
                return await self._attempt(call)
            try:
                async with asyncio.timeout_at(call.deadline_at) as deadline:
                    return await self._attempt(call)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise self._deadline_error(call) from None

        after_failure = functools.partial(self._after_failure, call)
        retrying = backoff.on_exception(
            _waits,
            LoyaltyLayerError,
            max_tries=call.options.max_retries + 1,
            jitter=None,
            giveup=functools.partial(_ends, call),
            on_backoff=after_failure,
            on_giveup=after_failure,
            logger=None,
            call=call,
            base=self._backoff_base,
            cap=self._backoff_cap,
        )
        response: Response = await retrying(next_attempt)()
        return response

    async def _after_failure(self, call: _Call, details: Mapping[str, Any]) -> None:
        """What follows a failed attempt, retried or not: a 429 pauses every call of the client
        for as long as the server asked."""
        error = details["exception"]
        if not _is_own(error, call):
            return
        if isinstance(error, RateLimitError) and not isinstance(error, BudgetExhaustedError):
            retry_after = error.retry_after or _DEFAULT_RETRY_AFTER
            logger.warning(
                "server rate limit hit: every request paused for %.0f s (%s)",
                retry_after,
                call.correlation_id,
            )
            await self.limiter.block(retry_after)
        if "wait" in details:
            logger.info(
                "retrying %s %s in %.2f s after %s (attempt %d, %s)",
                call.method,
                call.path,
                details["wait"],
                type(error).__name__,
                call.attempts,
                call.correlation_id,
            )

    async def _send(
        self, call: _Call, session: aiohttp.ClientSession, token: str | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The HTTP exchange of one attempt: its status, headers and body."""
        headers = {"X-Correlation-ID": call.correlation_id, "Accept": "application/json"}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        timeout = self._attempt_timeout(call)
        call.attempts += 1
        self.attempts += 1
        started = time.perf_counter()
        try:
            async with session.request(
                call.method, call.url, data=call.body, headers=headers, timeout=timeout
            ) as reply:
                raw = await reply.read()
        except TimeoutError:
            logger.info("%s %s timed out (%s)", call.method, call.path, call.correlation_id)
            if timeout is not self._session_timeout:
                raise self._deadline_error(call) from None
            raise APITimeoutError("no reply in time", **call.context()) from None
        except aiohttp.ClientError as exc:
            logger.info(
                "%s %s connection failed: %s (%s)",
                call.method,
                call.path,
                type(exc).__name__,
                call.correlation_id,
            )
            raise APIConnectionError(
                f"connection failed ({type(exc).__name__})", **call.context()
            ) from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d in %.1f ms (attempt %d, %s%s%s)",
                call.method,
                call.path,
                reply.status,
                (time.perf_counter() - started) * 1000,
                call.attempts,
                call.correlation_id,
                f", idempotency_key={call.idempotency_key}" if call.idempotency_key else "",
                ", replayed" if reply.headers.get("Idempotent-Replayed") == "true" else "",
            )
        return reply.status, reply.headers, raw

    def _attempt_timeout(self, call: _Call) -> aiohttp.ClientTimeout:
        """The session's timeout, or a shorter one when the call's deadline is nearer."""
        if call.deadline_at is None:
            return self._session_timeout
        left = call.deadline_at - asyncio.get_running_loop().time()
        if left <= 0:
            raise self._deadline_error(call)
        if left >= call.options.timeout:
            return self._session_timeout
        return aiohttp.ClientTimeout(total=left, sock_connect=min(left, 10.0))

    def _deadline_error(self, call: _Call) -> APITimeoutError:
        call.out_of_time = True
        return APITimeoutError(
            f"deadline of {call.options.deadline} s exceeded after {call.attempts} attempts",
            **call.context(),
        )

    def _map(self, call: _Call, status: int, headers: Mapping[str, str], raw: bytes) -> Response:
        """The reply as a :class:`Response`, or the typed error it stands for (raised)."""
        try:
            data = json.loads(raw.decode()) if raw else None
        except (ValueError, RecursionError):  # UnicodeDecodeError too; nested too deep
            data = _NOT_JSON
        if not 200 <= status < 300:
            raise self._error(call, status, headers, data)
        if data is _NOT_JSON or data is None:
            raise UnexpectedResponseError(
                f"{status} reply is not JSON", status=status, **call.context()
            )
        return Response(
            status=status,
            data=data,
            correlation_id=call.correlation_id,
            idempotency_key=call.idempotency_key,
            replayed=headers.get("Idempotent-Replayed") == "true",
            attempts=call.attempts,
        )

    def _error(self, call: _Call, status: int, headers: Mapping[str, str], data: Any) -> APIError:
        body: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not body and status < 500 and status != 429:
            return UnexpectedResponseError(
                f"{status} reply without a JSON error body", status=status, **call.context()
            )
        retry_after = _retry_after(headers, body) if status == 429 else None
        return status_error(status, body, retry_after=retry_after, **call.context())

    async def aclose(self) -> None:
        self._closed = True
        if self._session_pid == os.getpid():
            await self._auth.aclose()
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            if self._session_pid != os.getpid():
                bury(session)
            else:
                await session.close()
        if self._close_limiter and isinstance(self._rate_limit, Limiter):
            self._close_limiter = False
            await self._rate_limit.aclose()

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is not None and self._session_pid != os.getpid():
            # Forked: the session and any token refresh in flight belong to the parent.
            if self._owns_session:
                bury(self._session)
                self._session = None
            self._auth.forget_inflight()
            self._session_pid = os.getpid()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._session_timeout,
                headers={"User-Agent": _USER_AGENT},
                connector=aiohttp.TCPConnector(limit=100),
            )
            self._session_pid = os.getpid()
        return self._session

    async def _fetch_token(self) -> IssuedToken:
        response = await self.request(
            "POST",
            "/auth/token",
            body={
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "grant_type": "client_credentials",
            },
            authenticated=False,
            token_request=True,
            base_url=self.auth_url,
        )
        data = response.data
        token = data.get("access_token") if isinstance(data, Mapping) else None
        expires_in = data.get("expires_in") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise UnexpectedResponseError(
                "token reply has no access_token",
                status=response.status,
                method="POST",
                path="/auth/token",
                correlation_id=response.correlation_id,
            )
        if (
            not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or expires_in <= 0
        ):
            expires_in = 1800
        return IssuedToken(access_token=token, expires_in=float(expires_in))


_NOT_JSON = object()
