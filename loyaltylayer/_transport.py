"""The one request pipeline every call of the SDK goes through.

For each logical call: a correlation id and (for mutations) an idempotency key are fixed once,
then attempts are made until one succeeds or the retry policy gives up. Each attempt takes a
bearer token, then a lease from the rate limiter, then sends. The retry loop is outermost, so
every attempt is paced. The overall ``deadline`` starts with the first attempt: time spent
queueing for the rate limiter before it is not counted, so a thousand calls gathered at once
do not time out merely for waiting their turn.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import platform
import random
import time
from collections.abc import Generator, Mapping
from contextvars import ContextVar
from typing import Any

import aiohttp
import attrs
import backoff

from ._auth import IssuedToken, TokenManager
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    LoyaltyLayerError,
    RateLimitError,
    RequestInProgressError,
    UnexpectedResponseError,
    status_error,
)
from ._json import encode_compact
from ._logging import logger
from ._portal import bury
from ._ratelimit import Limiter, RateLimit, UnlimitedLimiter, origin_of, shared_limiter
from ._tokencache import TokenCache
from ._version import __version__

__all__ = ["Response", "Transport", "new_idempotency_key"]

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


def _retry_waits(base: float, cap: float, call: _Call) -> Generator[float, Any, None]:
    """backoff wait generator: what to wait depends on the error that ended the attempt.

    429 waits exactly ``retry_after`` (no jitter: jitter would turn a 60 s block into ~20 s and
    trip it again); ``request_in_progress`` waits a short fixed time; everything else waits
    full-jitter exponential time. A wait that would end past the call's deadline ends the
    retries instead (backoff then raises the last error).
    """
    error = yield 0.0
    failures = 0
    while True:
        if isinstance(error, RateLimitError):
            wait = error.retry_after or _DEFAULT_RETRY_AFTER
        elif isinstance(error, RequestInProgressError):
            wait = _IN_PROGRESS_WAIT
        else:
            wait = random.uniform(0.0, min(cap, base * 2.0**failures))
            failures += 1
        if call.deadline_at is not None and (
            asyncio.get_running_loop().time() + wait >= call.deadline_at
        ):
            return
        error = yield wait


def _give_up(error: Exception) -> bool:
    if not isinstance(error, LoyaltyLayerError):
        return True
    return not error.retryable or error.retries_exhausted


@attrs.define(kw_only=True)
class _Call:
    method: str
    url: str
    path: str
    body: bytes | None
    idempotency_key: str | None
    correlation_id: str
    authenticated: bool
    priority: bool
    attempts: int = 0
    first_error: LoyaltyLayerError | None = None
    """The error of the first attempt, handed to the retry loop (see ``Transport.request``)."""
    deadline_at: float | None = None
    """Loop time the call must end by; set when its first attempt starts."""

    def context(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "correlation_id": self.correlation_id,
            "idempotency_key": self.idempotency_key,
        }


class Transport:
    """Token, limiter, retries, typed errors: everything between a resource method and aiohttp."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_url: str,
        client_id: str,
        client_secret: str,
        timeout: float,
        max_retries: int,
        deadline: float | None,
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
        self._timeout = timeout
        self._session_timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=min(timeout, 10.0)
        )
        self._deadline = deadline
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
        self._retries = backoff.on_exception(
            _retry_waits,
            LoyaltyLayerError,
            max_tries=max_retries + 1,
            jitter=None,
            giveup=_give_up,
            on_backoff=self._log_backoff,
            logger=None,
            base=backoff_base,
            cap=backoff_cap,
            call=_CURRENT_CALL.get,
        )(self._retry)
        self._max_retries = max_retries
        self.attempts = 0
        """Attempts this client has sent (every one took a lease): for progress and tests."""

    def __repr__(self) -> str:
        return f"<Transport base_url={self.base_url!r} client_id={self._client_id!r}>"

    @property
    def limiter(self) -> Limiter:
        """The limiter pacing this client (made on first use, on the running loop)."""
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
        priority: bool = False,
        base_url: str | None = None,
    ) -> Response:
        """Send one logical request, retried as the policy allows; raise the typed error."""
        if self._closed:
            raise ClientClosedError("this client is closed")
        call = _Call(
            method=method,
            url=(base_url or self.base_url) + path,
            path=path,
            body=None if body is None else encode_compact(body).encode(),
            idempotency_key=idempotency_key,
            correlation_id=_new_correlation_id(),
            authenticated=authenticated,
            priority=priority,
        )
        try:
            try:
                return await self._attempt(call)
            except LoyaltyLayerError as error:
                if self._max_retries == 0 or _give_up(error):
                    raise
                call.first_error = error
            current = _CURRENT_CALL.set(call)
            try:
                response: Response = await self._retries(call)
            finally:
                _CURRENT_CALL.reset(current)
        except APIError as error:
            if not error.retries_exhausted:
                error.retries_exhausted = True
                error.attempts = call.attempts
            raise
        return response

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
            priority=True,
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

    async def _retry(self, call: _Call) -> Response:
        """The target of the backoff loop, entered only once the first attempt has failed.

        Its first run re-raises that failure, so backoff waits as its policy says before the
        second attempt; the first attempt itself never pays for the retry machinery.
        """
        if call.first_error is not None:
            error, call.first_error = call.first_error, None
            raise error
        if call.deadline_at is None:
            return await self._attempt(call)
        try:
            async with asyncio.timeout_at(call.deadline_at) as deadline:
                return await self._attempt(call)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise self._deadline_error(call) from None

    async def _attempt(self, call: _Call, *, fresh_token: bool = False) -> Response:
        """One attempt; when the token was rejected as expired, one more with a fresh token."""
        session = self._session_for_loop()
        token = (self._auth.current() or await self._auth.token()) if call.authenticated else None
        headers = {"X-Correlation-ID": call.correlation_id, "Accept": "application/json"}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        limiter = self.limiter
        if call.deadline_at is not None and asyncio.get_running_loop().time() >= call.deadline_at:
            raise self._deadline_error(call)
        async with limiter.lease(priority=call.priority):
            timeout = self._attempt_timeout(call)
            call.attempts += 1
            self.attempts += 1
            started = time.perf_counter()
            try:
                async with session.request(
                    call.method, call.url, data=call.body, headers=headers, timeout=timeout
                ) as reply:
                    raw = await reply.read()
                    status = reply.status
                    reply_headers = reply.headers
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
        replayed = reply_headers.get("Idempotent-Replayed") == "true"
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d in %.1f ms (attempt %d, %s%s%s)",
                call.method,
                call.path,
                status,
                (time.perf_counter() - started) * 1000,
                call.attempts,
                call.correlation_id,
                f", idempotency_key={call.idempotency_key}" if call.idempotency_key else "",
                ", replayed" if replayed else "",
            )
        try:
            data = json.loads(raw.decode()) if raw else None
        except (ValueError, RecursionError):  # UnicodeDecodeError too; nested too deep
            data = _NOT_JSON
        if 200 <= status < 300:
            if data is _NOT_JSON or data is None:
                raise UnexpectedResponseError(
                    f"{status} reply is not JSON", status=status, **call.context()
                )
            return Response(
                status=status,
                data=data,
                correlation_id=call.correlation_id,
                idempotency_key=call.idempotency_key,
                replayed=replayed,
                attempts=call.attempts,
            )
        error = await self._error(call, status, reply_headers, data)
        if (
            isinstance(error, AuthenticationError)
            and error.error == "invalid_token"
            and token is not None
            and not fresh_token
        ):
            logger.info("access token rejected; fetching a new one (%s)", call.correlation_id)
            await self._auth.invalidate(token)
            return await self._attempt(call, fresh_token=True)
        raise error

    def _attempt_timeout(self, call: _Call) -> aiohttp.ClientTimeout:
        """The session's timeout, or a shorter one when the call's deadline is nearer."""
        if self._deadline is None:
            return self._session_timeout
        now = asyncio.get_running_loop().time()
        if call.deadline_at is None:
            call.deadline_at = now + self._deadline
        left = call.deadline_at - now
        if left <= 0:
            raise self._deadline_error(call)
        if left >= self._timeout:
            return self._session_timeout
        return aiohttp.ClientTimeout(total=left, sock_connect=min(left, 10.0))

    def _deadline_error(self, call: _Call) -> APITimeoutError:
        error = APITimeoutError(
            f"deadline of {self._deadline} s exceeded after {call.attempts} attempts",
            **call.context(),
        )
        error.retries_exhausted = True
        error.attempts = call.attempts
        return error

    async def _error(
        self, call: _Call, status: int, headers: Mapping[str, str], data: Any
    ) -> APIError:
        body: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if not body and status < 500 and status != 429:
            return UnexpectedResponseError(
                f"{status} reply without a JSON error body", status=status, **call.context()
            )
        retry_after = _retry_after(headers, body) if status == 429 else None
        error: APIStatusError = status_error(
            status, body, retry_after=retry_after, **call.context()
        )
        if retry_after is not None:
            logger.warning(
                "server rate limit hit: every request paused for %.0f s (%s)",
                retry_after,
                call.correlation_id,
            )
            await self.limiter.block(retry_after)
        return error

    def _log_backoff(self, details: Any) -> None:
        error = details.get("exception")
        call = details["args"][0]
        logger.info(
            "retrying %s %s in %.2f s after %s (attempt %d, %s)",
            call.method,
            call.path,
            details.get("wait", 0.0),
            type(error).__name__,
            call.attempts,
            call.correlation_id,
        )


_NOT_JSON = object()
_CURRENT_CALL: ContextVar[_Call] = ContextVar("loyaltylayer_current_call")
"""The call whose retries backoff is running: its wait generator reads the deadline from it."""
