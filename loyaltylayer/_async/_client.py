"""``AsyncLoyaltyLayer``: the client async web apps await, and the source of the sync facade."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from .._config import (
    ENV_AUTH_URL,
    ENV_BASE_URL,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_REDIS_URL,
    check_url,
    env,
)
from .._errors import ConfigurationError
from .._logging import configure_from_env
from .._models import check_id, raise_if_invalid
from .._ratelimit import Limiter, Priority, RateLimit
from .._tokencache import TokenCache
from .._transport import RequestOptions, Transport

if TYPE_CHECKING:
    from .._enroll_models import EnrollCheckpoint, EnrollOutcome, EnrollRecord
    from ._resources import AsyncCards, AsyncPasses

__all__ = ["AsyncLoyaltyLayer"]

DEFAULT_RATE_LIMIT = RateLimit(requests=100, per=60.0)


class AsyncLoyaltyLayer:
    """A client for the LoyaltyLayer API.

    One request pipeline serves every call: the access token (fetched once, refreshed early),
    the rate limiter (100 requests per 60 s by default, shared by every client of this process
    that talks to the same host), retries with backoff, and typed errors. Nothing tied to an
    event loop is made here: the HTTP session is opened by the first request, on its loop.
    Use it as a context manager, or call :meth:`close` when done.

    A limiter given as ``rate_limit`` may pace other clients too, so :meth:`close` leaves it
    open, unless ``close_limiter=True`` hands it to this client.

    ``priority`` is that of the client's calls: ``"interactive"`` (someone waits for them)
    take the next free lease ahead of every queued ``"batch"`` call, and their ``deadline``
    counts from the call, queueing included: a call that cannot get a lease in time fails at
    once, unsent, with :class:`BudgetExhaustedError`. Batch calls (``enroll()`` and
    ``batch_create``'s chunks always are) count their deadline from their first lease.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        base_url: str,
        *,
        auth_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        rate_limit: RateLimit | Limiter | None = DEFAULT_RATE_LIMIT,
        deadline: float | None = 300.0,
        token_cache: TokenCache | None = None,
        close_limiter: bool = False,
        session: aiohttp.ClientSession | None = None,
        priority: Priority = "interactive",
    ) -> None:
        errors: dict[str, str] = {}
        check_id(errors, "client_id", client_id)
        if not isinstance(client_secret, str) or not client_secret:
            errors["client_secret"] = "must be a non-empty string"
        if not isinstance(timeout, int | float) or timeout <= 0:
            errors["timeout"] = "must be a positive number of seconds"
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            errors["max_retries"] = "must be a whole number, 0 or more"
        if deadline is not None and (not isinstance(deadline, int | float) or deadline <= 0):
            errors["deadline"] = "must be a positive number of seconds, or None"
        if rate_limit is not None and not isinstance(rate_limit, RateLimit | Limiter):
            errors["rate_limit"] = "must be a loyaltylayer.RateLimit, a limiter, or None"
        if not isinstance(close_limiter, bool):
            errors["close_limiter"] = "must be True or False"
        elif close_limiter and not isinstance(rate_limit, Limiter):
            errors["close_limiter"] = "is for a limiter given as rate_limit"
        if priority not in ("interactive", "batch"):
            errors["priority"] = 'must be "interactive" or "batch"'
        raise_if_invalid(errors)
        base_url = check_url("base_url", base_url)
        configure_from_env()
        self._transport = Transport(
            base_url=base_url,
            auth_url=check_url("auth_url", auth_url) if auth_url is not None else base_url,
            client_id=client_id,
            client_secret=client_secret,
            options=RequestOptions(
                timeout=float(timeout),
                max_retries=max_retries,
                deadline=deadline,
                priority=priority,
            ),
            rate_limit=rate_limit,
            close_limiter=close_limiter,
            session=session,
            token_cache=token_cache,
        )
        # The resources, and cattrs with them, load with the first client.
        from ._resources import AsyncCards, AsyncPasses

        self._cards = AsyncCards(self._transport)
        self._passes = AsyncPasses(self._transport)

    def __repr__(self) -> str:
        return f"<AsyncLoyaltyLayer {self._transport.base_url}>"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured from ``LOYALTYLAYER_CLIENT_ID``, ``_CLIENT_SECRET``, ``_BASE_URL``
        (and the optional ``_AUTH_URL`` and ``_REDIS_URL``); keyword arguments override them.

        With ``LOYALTYLAYER_REDIS_URL`` set, the rate limit is shared through Redis by every
        process using that URL; the client closes the limiter it makes for it.
        """
        settings: dict[str, Any] = {
            "client_id": env(ENV_CLIENT_ID),
            "client_secret": env(ENV_CLIENT_SECRET),
            "base_url": env(ENV_BASE_URL),
            "auth_url": env(ENV_AUTH_URL),
        }
        missing = [
            name
            for name, key in (
                (ENV_CLIENT_ID, "client_id"),
                (ENV_CLIENT_SECRET, "client_secret"),
                (ENV_BASE_URL, "base_url"),
            )
            if settings[key] is None and key not in overrides
        ]
        if missing:
            raise ConfigurationError(f"set {', '.join(missing)} in the environment")
        redis_url = env(ENV_REDIS_URL)
        if redis_url is not None and "rate_limit" not in overrides:
            from ..contrib.redis import RedisRateLimiter

            settings["rate_limit"] = RedisRateLimiter.from_url(redis_url)
            settings["close_limiter"] = True
        return cls(**(settings | overrides))

    @property
    def cards(self) -> AsyncCards:
        """Card encryption keys and tokenization."""
        return self._cards

    @property
    def passes(self) -> AsyncPasses:
        """Create, batch-create, read, update and cancel passes."""
        return self._passes

    @property
    def limiter(self) -> Limiter:
        """The rate limiter pacing this client: its ``stats`` (waiting, in use, blocked for)
        tell an app when to shed load. Available before the first call."""
        return self._transport.limiter

    @property
    def attempts(self) -> int:
        """HTTP attempts this client has sent so far (each took one request of the budget)."""
        return self._transport.attempts

    async def enroll(
        self,
        records: Iterable[EnrollRecord | Mapping[str, str]]
        | AsyncIterable[EnrollRecord | Mapping[str, str]],
        *,
        plan_id: str,
        job_id: str | None = None,
        checkpoint: EnrollCheckpoint | None = None,
        concurrency: int = 8,
        max_wait: float = 120.0,
    ) -> AsyncIterator[EnrollOutcome]:
        """Enroll many cardholders: tokenize each card, create their passes in full batches.

        Yields one outcome per record, as it is known (not in input order): ``created`` with
        the pass, ``failed`` with a typed error (``outcome.retryable`` tells a fault from a bad
        record), ``skipped`` when ``checkpoint`` says an earlier run created it, or
        ``created_earlier`` when the server says so. Rows may be :class:`EnrollRecord` or flat
        mappings of the CLI's columns; a bad row fails with a :class:`ValidationError`, and a
        row with the key of an earlier one with a :class:`DuplicateRecordError`, at no request.

        Give the same ``job_id`` and a persistent ``checkpoint`` to every run of one job: each
        record's create then carries the same idempotency key and is replayed, never repeated.
        An error that is no one record's (the checkpoint, ``records``) stops the job with an
        :class:`EnrollmentError` once the outcomes already recorded are handed out.
        ``concurrency`` is the number of cards tokenized at once; ``max_wait`` is how long an
        enrol token may wait for its batch to fill.

        A job that needs more than one window of the rate limit spreads its first window's
        requests evenly across the window; later windows repeat that shape, so the server sees
        a steady stream instead of a burst per window, and a pause delays one request rather
        than every request queued behind it. A job that fits in one window goes at once.
        """
        errors: dict[str, str] = {}
        check_id(errors, "plan_id", plan_id)
        if job_id is not None:
            check_id(errors, "job_id", job_id)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            errors["concurrency"] = "must be a whole number, 1 or more"
        if not isinstance(max_wait, int | float) or max_wait < 0:
            errors["max_wait"] = "must be a number of seconds, 0 or more"
        raise_if_invalid(errors)
        # The engine loads with the first job: most programs never enroll.
        from ._enroll import run_enrollment

        outcomes = run_enrollment(
            self._cards,
            self._passes,
            records,
            plan_id=plan_id,
            job_id=job_id or f"job_{uuid.uuid4().hex}",
            checkpoint=checkpoint,
            concurrency=concurrency,
            max_wait=float(max_wait),
            limiter=self._transport.limiter,
        )
        async with aclosing(outcomes):
            async for outcome in outcomes:
                yield outcome

    async def close(self) -> None:
        """Close the HTTP session (if the client opened it). Safe to call twice."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
