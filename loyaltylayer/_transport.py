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
import ssl
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import aiohttp
import attrs
import yarl

from ._auth import IssuedToken, TokenManager
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BudgetExhaustedError,
    ClientClosedError,
    ConfigurationError,
    EventLoopError,
    LoyaltyLayerError,
    RateLimitError,
    RequestInProgressError,
    UnexpectedResponseError,
    status_error,
)
from ._json import encode_compact
from ._logging import logger
from ._loops import LoopBound, leave_open
from ._network import Network, Proxy, default_ssl_context
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
from ._retry_after import DOCUMENTED_RETRY_AFTER, MAX_RETRY_AFTER, cap_retry_after
from ._secrets import Secret
from ._tokencache import TokenCache
from ._version import __version__

if TYPE_CHECKING:
    from ._client_auth import ClientAuthentication
    from ._telemetry import Instrumentation

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "Response", "Transport", "calls_as", "new_idempotency_key"]

_DEFAULT_RETRY_AFTER = 60.0
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""The most bytes of one reply read, counted after decompression.

The largest legitimate reply is a batch-create result for 100 passes: each pass echoes its
holder, reference and metadata, and the API refuses request bodies over 1 MiB, so such a reply
stays well under 2 MiB. 8 MiB leaves room for that to grow, and bounds what a broken or hostile
server (an endless body, a gzip bomb) can make the client hold."""
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
    headers: Mapping[str, str] = attrs.field(repr=False)
    data: Any = attrs.field(repr=False)
    correlation_id: str
    idempotency_key: str | None
    replayed: bool
    attempts: int
    lease_wait: float
    """Seconds the call's attempts waited for the rate limiter's leases, all added up."""
    elapsed: float
    """Seconds from the call to its reply: every attempt, wait and retry included."""


def _retry_after(headers: Mapping[str, str], body: Mapping[str, Any]) -> float:
    """The longer of the body's ``retry_after`` and the ``Retry-After`` header (seconds or date),
    in whole seconds, at most :data:`MAX_RETRY_AFTER` (see :mod:`._retry_after`)."""
    candidates: list[float] = []
    value = body.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        candidates.append(cap_retry_after(value))
    header = headers.get("Retry-After")
    if header:
        try:
            candidates.append(cap_retry_after(max(0.0, float(header))))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header).timestamp()
            except (TypeError, ValueError, OverflowError):
                pass
            else:
                candidates.append(cap_retry_after(max(0.0, when - time.time())))
    finite = [c for c in candidates if math.isfinite(c)]
    if not finite:
        return _DEFAULT_RETRY_AFTER
    wait = math.ceil(max(finite))
    if wait > DOCUMENTED_RETRY_AFTER:
        logger.warning(
            "a 429 asked for a wait of more than the %.0f s the API documents: waiting %d s "
            "(at most %.0f s are honoured)",
            DOCUMENTED_RETRY_AFTER,
            wait,
            MAX_RETRY_AFTER,
        )
    return float(wait)


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
    extra_headers: tuple[tuple[str, str], ...] = ()
    """Headers sent with every attempt, besides the pipeline's own (never one of those)."""
    client_timeout: aiohttp.ClientTimeout = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: aiohttp.ClientTimeout(
                total=self.timeout, sock_connect=min(self.timeout, 10.0)
            ),
            takes_self=True,
        ),
    )
    """``timeout`` as aiohttp takes it: made once, as every attempt without a nearer deadline
    uses it."""


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
    body: Secret | None
    """The JSON sent, as a :class:`Secret`: it may hold the client secret or a card's JWE."""
    idempotency_key: str | None
    correlation_id: str
    authenticated: bool
    priority: LeasePriority
    options: RequestOptions
    proxy: Proxy | None
    secret_fields: frozenset[str]
    """Keys whose string values in the reply are read as :class:`Secret` (``access_token``)."""
    started: float
    """Loop time the call was made."""
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    """Sent with every attempt besides the pipeline's own: ``extra_headers``, client auth."""
    body_per_attempt: Callable[[], Any] | None = attrs.field(default=None, repr=False)
    """Makes a new body for every attempt, for a body that may be used only once (an RFC 7523
    client assertion: its ``jti`` is single-use)."""
    span: Any = None
    """The telemetry span of the call, when it has one."""
    lease_wait: float = 0.0
    """Seconds its attempts waited for a lease so far."""
    attempts: int = 0
    deadline_at: float | None = None
    """Loop time the call must end by; set when the call starts (interactive) or when its first
    attempt gets its lease."""
    out_of_time: bool = False
    """Set when the deadline ended the call: no retry can follow."""

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
            wait = _DEFAULT_RETRY_AFTER if error.retry_after is None else error.retry_after
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
        client_auth: ClientAuthentication,
        options: RequestOptions,
        rate_limit: RateLimit | Limiter | None,
        close_limiter: bool,
        session: aiohttp.ClientSession | None,
        token_cache: TokenCache | None,
        network: Network,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        telemetry: Instrumentation | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self._client_id = client_id
        self._network = network
        self._proxies = {url: network.proxy_for(url) for url in (self.base_url, self.auth_url)}
        # Made here, not on the loop: loading the system's CAs takes tens of milliseconds.
        https = any(url.startswith("https:") for url in (self.base_url, self.auth_url))
        self._ssl: ssl.SSLContext | bool = network.ssl_context or (
            default_ssl_context() if https else True  # plain http: no TLS at all
        )
        self._max_response_bytes = max_response_bytes
        self._client_auth = client_auth
        self._options = options
        self._telemetry = telemetry
        self._trace_configs = list(trace_configs)
        self._session_timeout = options.client_timeout
        self._rate_limit = rate_limit
        self._limiter: Limiter | None = None
        self._close_limiter = close_limiter
        self._sessions: LoopBound[aiohttp.ClientSession] = (
            LoopBound(self._open_session, aiohttp.ClientSession.close, what="this client")
            if session is None
            else LoopBound(_refuse_new_session, leave_open, what="this client", first=session)
        )
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
            if self._telemetry is not None:
                self._telemetry.watch(self._limiter)
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
        secret_fields: frozenset[str] = frozenset(),
        options: RequestOptions | None = None,
        traced: bool = True,
        headers: Mapping[str, str] | None = None,
        body_per_attempt: Callable[[], Any] | None = None,
    ) -> Response:
        """Send one logical request, retried as the policy allows; raise the typed error.

        ``secret_fields`` names the keys of the reply whose values are secrets (a token).
        ``options`` are the client's unless given (a ``with_options`` view gives its own);
        ``traced=False`` makes no span for it (its metrics are still recorded).
        ``token_request`` puts it ahead of every other call waiting for a lease.
        """
        base_url = base_url or self.base_url
        options = options or self._options
        priority: LeasePriority = "token" if token_request else _CALLS_AS.get() or options.priority
        call = _Call(
            method=method,
            url=base_url + path,
            path=path,
            body=None if body is None else Secret(encode_compact(body)),
            idempotency_key=idempotency_key,
            correlation_id=_new_correlation_id(),
            authenticated=authenticated,
            priority=priority,
            options=options,
            proxy=self._proxies[base_url],
            secret_fields=secret_fields,
            started=asyncio.get_running_loop().time(),
            headers=options.extra_headers + tuple((headers or {}).items()),
            body_per_attempt=body_per_attempt,
        )
        if priority == "interactive" and options.deadline is not None:
            call.deadline_at = call.started + options.deadline
        if self._telemetry is not None:
            return await self._telemetry.observe(call, self._run, traced=traced)
        return await self._run(call)

    async def _run(self, call: _Call) -> Response:
        """The logical call: its first attempt, then the retries it may need."""
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
        if self._closed:  # checked by every attempt: a retry may come after close()
            raise ClientClosedError("this client is closed")
        session = await self._sessions.get()
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
        if self._telemetry is not None:
            self._telemetry.failed_attempt(call, error, details.get("wait"))
        if isinstance(error, RateLimitError) and not isinstance(error, BudgetExhaustedError):
            retry_after = _DEFAULT_RETRY_AFTER if error.retry_after is None else error.retry_after
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
        if call.body_per_attempt is not None:
            call.body = Secret(encode_compact(call.body_per_attempt()))
        headers = {"X-Correlation-ID": call.correlation_id, "Accept": "application/json"}
        headers.update(call.headers)
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = Secret(f"Bearer {token}")
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        timeout = self._attempt_timeout(call)
        proxy = call.proxy
        call.attempts += 1
        self.attempts += 1
        started = time.perf_counter()
        try:
            async with session.request(
                call.method,
                call.url,
                data=call.body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=None if proxy is None else proxy.url,
                proxy_headers=None if proxy is None else proxy.headers,
            ) as reply:
                raw = await self._read(call, reply)
        except TimeoutError as exc:
            logger.info("%s %s timed out (%s)", call.method, call.path, call.correlation_id)
            # Connecting or reading too slowly (aiohttp's ServerTimeoutError) is the attempt's
            # own timeout; only the total, cut short by the deadline, is the deadline's.
            cut_short = timeout is not call.options.client_timeout
            if cut_short and not isinstance(exc, aiohttp.ServerTimeoutError):
                raise self._deadline_error(call) from None
            raise APITimeoutError("no reply in time", **call.context()) from None
        except aiohttp.ClientError as exc:
            raise self._connection_error(call, exc) from exc
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

    def _connection_error(self, call: _Call, exc: aiohttp.ClientError) -> LoyaltyLayerError:
        """What a failed exchange stands for: a configuration no retry can fix (an untrusted
        server certificate, proxy credentials refused), else a retryable connection error that
        says what failed."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return _untrusted(call, exc)
        if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status == 407:
            logger.warning("%s %s: the proxy refused its credentials", call.method, call.path)
            return ConfigurationError(
                "the proxy refused its credentials (407 Proxy Authentication Required): "
                "check the proxy URL (proxy, LOYALTYLAYER_PROXY, --proxy, HTTPS_PROXY)"
            )
        what = type(exc).__name__
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            what += f": the proxy answered {exc.status}"
        elif isinstance(exc, aiohttp.ClientSSLError):
            what += f": TLS failed ({getattr(exc.os_error, 'reason', None) or exc.os_error})"
        elif (
            _dropped_after_connecting(exc)
            and call.url.startswith("https:")
            and not self._network.presents_certificate
        ):
            # With TLS 1.3 a server that wants a client certificate checks it after the
            # handshake, and its alert is lost: the client sees the connection closed or reset.
            what += "; if the API requires a client certificate (mTLS), give client_cert"
        logger.info(
            "%s %s connection failed: %s (%s)", call.method, call.path, what, call.correlation_id
        )
        return APIConnectionError(f"connection failed ({what})", **call.context())

    async def _read(self, call: _Call, reply: aiohttp.ClientResponse) -> bytes:
        """The reply's body, decompressed; past ``max_response_bytes``, an error instead.

        aiohttp decompresses a chunk at a time, so counting the chunks bounds memory for a
        compressed reply too (a gzip bomb).
        """
        limit = self._max_response_bytes
        declared = reply.content_length
        if declared is not None and declared > limit and "Content-Encoding" not in reply.headers:
            reply.close()
            raise self._too_large(call, reply.status)
        chunks: list[bytes] = []
        size = 0
        while chunk := await reply.content.readany():
            size += len(chunk)
            if size > limit:
                reply.close()
                raise self._too_large(call, reply.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, call: _Call, status: int) -> UnexpectedResponseError:
        logger.warning(
            "%s %s: reply larger than %d bytes, not read (%s)",
            call.method,
            call.path,
            self._max_response_bytes,
            call.correlation_id,
        )
        return UnexpectedResponseError(
            f"{status} reply is larger than max_response_bytes ({self._max_response_bytes} "
            "bytes); reading stopped",
            status=status,
            **call.context(),
        )

    def _attempt_timeout(self, call: _Call) -> aiohttp.ClientTimeout:
        """The call's timeout, or a shorter one when the call's deadline is nearer."""
        if call.deadline_at is None:
            return call.options.client_timeout
        left = call.deadline_at - asyncio.get_running_loop().time()
        if left <= 0:
            raise self._deadline_error(call)
        if left >= call.options.timeout:
            return call.options.client_timeout
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
            if not raw:
                data = None
            elif call.secret_fields:
                data = json.loads(raw.decode(), object_hook=_hiding(call.secret_fields))
            else:
                data = json.loads(raw.decode())
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
            headers=headers,
            data=data,
            correlation_id=call.correlation_id,
            idempotency_key=call.idempotency_key,
            replayed=headers.get("Idempotent-Replayed") == "true",
            attempts=call.attempts,
            lease_wait=call.lease_wait,
            elapsed=asyncio.get_running_loop().time() - call.started,
        )

    def _error(self, call: _Call, status: int, headers: Mapping[str, str], data: Any) -> APIError:
        if 300 <= status < 400:
            return _redirect_refused(call, status, headers)
        body: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not body and status < 500 and status != 429:
            return UnexpectedResponseError(
                f"{status} reply without a JSON error body", status=status, **call.context()
            )
        retry_after = _retry_after(headers, body) if status == 429 else None
        return status_error(status, body, retry_after=retry_after, **call.context())

    async def aclose(self) -> None:
        self._closed = True
        await self._auth.aclose()
        await self._sessions.aclose()
        if self._close_limiter and isinstance(self._rate_limit, Limiter):
            self._close_limiter = False
            await self._rate_limit.aclose()

    def _open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=self._session_timeout,
            headers={"User-Agent": _USER_AGENT},
            connector=aiohttp.TCPConnector(limit=100, ssl=self._ssl),
            trace_configs=self._trace_configs or None,
        )

    async def _fetch_token(self) -> IssuedToken:
        auth = self._client_auth
        response = await self.request(
            "POST",
            "/auth/token",
            headers=auth.headers(),
            body_per_attempt=auth.body,
            authenticated=False,
            token_request=True,
            base_url=self.auth_url,
            secret_fields=_TOKEN_FIELDS,
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
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token"})


def _hiding(fields: frozenset[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A ``json.loads`` object hook that reads the string values of ``fields`` as secrets, so
    that no dict on the way to the model holds them in plain text."""

    def hide(obj: dict[str, Any]) -> dict[str, Any]:
        for name in fields & obj.keys():
            if isinstance(obj[name], str):
                obj[name] = Secret(obj[name])
        return obj

    return hide


def _redirect_refused(call: _Call, status: int, headers: Mapping[str, str]) -> APIError:
    """A redirect is an error: following it would send the body (a client secret, a card's
    JWE) and the bearer token to wherever it points. Only the target's origin is named: its
    query string may hold anything."""
    try:
        target = str(yarl.URL(call.url).join(yarl.URL(headers.get("Location", ""))).origin())
    except (ValueError, TypeError):
        target = "an unreadable location"
    logger.warning(
        "%s %s answered %d, a redirect to %s: not followed (%s)",
        call.method,
        call.path,
        status,
        target,
        call.correlation_id,
    )
    return UnexpectedResponseError(
        f"{status} redirect to {target} refused: the SDK never follows redirects",
        status=status,
        **call.context(),
    )


def _untrusted(call: _Call, exc: aiohttp.ClientConnectorCertificateError) -> ConfigurationError:
    """A server certificate this client does not trust: no retry can change that."""
    reason = exc.certificate_error
    detail = reason.verify_message if isinstance(reason, ssl.SSLCertVerificationError) else None
    logger.warning("%s %s: TLS certificate not trusted (%s)", call.method, call.path, detail)
    return ConfigurationError(
        f"the TLS certificate of {exc.host} is not trusted ({detail or reason}): give the CA "
        "that issued it as ca_bundle (LOYALTYLAYER_CA_BUNDLE, --ca-bundle)"
    )


def _dropped_after_connecting(exc: aiohttp.ClientError) -> bool:
    """The server closed or reset a connection it had accepted (not: refused to connect)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and not isinstance(
        exc, aiohttp.ClientConnectorError
    )


def _refuse_new_session() -> aiohttp.ClientSession:
    raise EventLoopError(
        "the aiohttp session given as session= belongs to the event loop (and process) that "
        "made it, and this client now runs on another: give the client no session (it makes "
        "one on each loop), or a session made on this loop"
    )
