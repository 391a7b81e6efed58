"""``AsyncLoyaltyLayer``: the client async web apps await, and the source of the sync facade."""

from __future__ import annotations

import copy
import os
import ssl
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import aiohttp

from .._client_auth import (
    ENV_PRIVATE_KEY,
    ENV_TOKEN_AUTH_METHOD,
    TokenAuthMethod,
    client_authentication,
)
from .._config import (
    ENV_AUTH_URL,
    ENV_BASE_URL,
    ENV_CA_BUNDLE,
    ENV_CLIENT_CERT,
    ENV_CLIENT_ID,
    ENV_CLIENT_KEY,
    ENV_CLIENT_SECRET,
    ENV_PROXY,
    ENV_REDIS_URL,
    check_url,
    env,
    secret_env,
)
from .._errors import ConfigurationError
from .._logging import configure_from_env
from .._models import check_id, raise_if_invalid
from .._network import PathLike, make_network
from .._options import NOT_GIVEN, Channel, NotGiven, check_request_options, evolve_options
from .._ratelimit import Limiter, Priority, RateLimit
from .._tokencache import TokenCache
from .._transport import DEFAULT_MAX_RESPONSE_BYTES, RequestOptions, Transport

if TYPE_CHECKING:
    from .._enroll_models import EnrollCheckpoint, EnrollOutcome, EnrollRecord
    from .._telemetry import Instrumentation, Telemetry
    from ._resources import (
        AsyncCards,
        AsyncCardsWithRawResponse,
        AsyncPasses,
        AsyncPassesWithRawResponse,
    )

__all__ = ["AsyncLoyaltyLayer", "AsyncLoyaltyLayerWithRawResponse"]

DEFAULT_RATE_LIMIT = RateLimit(requests=100, per=60.0)


class AsyncLoyaltyLayerWithRawResponse:
    """``client.with_raw_response``: the client's resources, each method returning an
    :class:`APIResponse` (status, headers, correlation id, attempts... and ``.parse()``)."""

    def __init__(self, cards: AsyncCards, passes: AsyncPasses) -> None:
        from ._resources import AsyncCardsWithRawResponse, AsyncPassesWithRawResponse

        self._cards = AsyncCardsWithRawResponse(cards)
        self._passes = AsyncPassesWithRawResponse(passes)

    @property
    def cards(self) -> AsyncCardsWithRawResponse:
        """``client.cards``, with raw responses."""
        return self._cards

    @property
    def passes(self) -> AsyncPassesWithRawResponse:
        """``client.passes``, with raw responses."""
        return self._passes


def _instrumentation(
    errors: dict[str, str], telemetry: object, base_url: str
) -> Instrumentation | None:
    """The client's telemetry, or ``None`` when it has none (and imports nothing for it)."""
    if telemetry is False:
        return None
    from .._telemetry import Instrumentation, Telemetry

    if telemetry is True:
        telemetry = Telemetry()
    if not isinstance(telemetry, Telemetry):
        errors["telemetry"] = "must be True, False or a loyaltylayer.Telemetry"
        return None
    try:
        return Instrumentation(telemetry, base_url)
    except ImportError:
        errors["telemetry"] = "needs OpenTelemetry: pip install 'loyaltylayer[otel]'"
        return None


class AsyncLoyaltyLayer:
    """A client for the LoyaltyLayer API.

    One request pipeline serves every call: the access token (fetched once, refreshed early),
    the rate limiter (100 requests per 60 s by default, shared by every client of this process
    that talks to the same host), retries with backoff, and typed errors. Nothing tied to an
    event loop is made here: the HTTP session is opened by the first request, on its loop.
    Use it as a context manager, or call :meth:`close` when done.

    A limiter given as ``rate_limit`` may pace other clients too, so :meth:`close` leaves it
    open, unless ``close_limiter=True`` hands it to this client.

    Networks (see ``docs/network-security.md`` in the source distribution): ``proxy`` is an
    ``http(s)://`` forward proxy (credentials in it are kept secret); with ``trust_env`` (the
    default) ``HTTPS_PROXY`` and ``NO_PROXY`` are honoured when no ``proxy`` is given.
    ``ca_bundle`` (a PEM file or directory) adds CAs to the system's; ``client_cert`` and
    ``client_key`` (PEM files) are presented for mTLS; ``ssl_context`` replaces all of these.
    TLS 1.2 is the least accepted. Redirects are never followed, and a reply larger than
    ``max_response_bytes`` (after decompression) is an error.

    The token request authenticates the client as ``token_auth_method`` says:
    ``"client_secret_post"`` (the default: the secret in the JSON body, as the integration
    guide shows), ``"client_secret_basic"`` (an HTTP Basic header) or ``"private_key_jwt"``
    (a JWT signed with ``private_key``, a PEM file's path or its bytes; ``client_secret`` is
    then ``None``). A ``private_key`` alone implies ``"private_key_jwt"``.

    ``telemetry=True`` sends OpenTelemetry spans and metrics to the global providers, and
    ``telemetry=ll.Telemetry(...)`` to the given ones (the ``otel`` extra). ``trace_configs``
    instrument each HTTP attempt of the session the client opens (each is an aiohttp
    ``TraceConfig``; the async client only).

    ``priority`` is that of the client's calls: ``"interactive"`` (someone waits for them)
    take the next free lease ahead of every queued ``"batch"`` call, and their ``deadline``
    counts from the call, queueing included: a call that cannot get a lease in time fails at
    once, unsent, with :class:`BudgetExhaustedError`. Batch calls (``enroll()`` and
    ``batch_create``'s chunks always are) count their deadline from their first lease.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | None,
        base_url: str,
        *,
        auth_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        rate_limit: RateLimit | Limiter | None = DEFAULT_RATE_LIMIT,
        deadline: float | None = 300.0,
        token_cache: TokenCache | None = None,
        close_limiter: bool = False,
        token_auth_method: TokenAuthMethod | None = None,
        private_key: str | bytes | os.PathLike[str] | None = None,
        telemetry: bool | Telemetry = False,
        session: aiohttp.ClientSession | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        ca_bundle: PathLike | None = None,
        client_cert: PathLike | None = None,
        client_key: PathLike | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        priority: Priority = "interactive",
    ) -> None:
        errors: dict[str, str] = {}
        check_id(errors, "client_id", client_id)
        check_request_options(errors, timeout=timeout, max_retries=max_retries, deadline=deadline)
        if session is not None and trace_configs:
            errors["trace_configs"] = "are for the session the client opens: add them to yours"
        if rate_limit is not None and not isinstance(rate_limit, RateLimit | Limiter):
            errors["rate_limit"] = "must be a loyaltylayer.RateLimit, a limiter, or None"
        if not isinstance(close_limiter, bool):
            errors["close_limiter"] = "must be True or False"
        elif close_limiter and not isinstance(rate_limit, Limiter):
            errors["close_limiter"] = "is for a limiter given as rate_limit"
        if (
            not isinstance(max_response_bytes, int)
            or isinstance(max_response_bytes, bool)
            or max_response_bytes < 1
        ):
            errors["max_response_bytes"] = "must be a whole number of bytes, 1 or more"
        if priority not in ("interactive", "batch"):
            errors["priority"] = 'must be "interactive" or "batch"'
        base_url = check_url("base_url", base_url)
        auth_url = check_url("auth_url", auth_url) if auth_url is not None else base_url
        client_auth = client_authentication(
            errors,
            client_id=client_id,
            client_secret=client_secret,
            method=token_auth_method,
            private_key=private_key,
            token_url=f"{auth_url}/auth/token",
        )
        instrumentation = _instrumentation(errors, telemetry, base_url)
        raise_if_invalid(errors)
        assert client_auth is not None
        network = make_network(
            proxy=proxy,
            trust_env=trust_env,
            ca_bundle=ca_bundle,
            client_cert=client_cert,
            client_key=client_key,
            ssl_context=ssl_context,
            own_session=session is None,
        )
        configure_from_env()
        options = RequestOptions(
            timeout=float(timeout), max_retries=max_retries, deadline=deadline, priority=priority
        )
        self._transport = Transport(
            base_url=base_url,
            auth_url=auth_url,
            client_id=client_id,
            client_auth=client_auth,
            options=options,
            rate_limit=rate_limit,
            close_limiter=close_limiter,
            session=session,
            token_cache=token_cache,
            network=network,
            max_response_bytes=max_response_bytes,
            telemetry=instrumentation,
            trace_configs=trace_configs,
        )
        self._attach(Channel(self._transport, options))

    def _attach(self, channel: Channel, cards: AsyncCards | None = None) -> None:
        """Send through ``channel``; ``cards`` shares its card keys with the new ``cards``."""
        # The resources, and cattrs with them, load with the first client.
        from ._resources import AsyncCards, AsyncPasses

        self._channel = channel
        self._cards = cards._over(channel) if cards is not None else AsyncCards(channel)
        self._passes = AsyncPasses(channel)
        self._with_raw_response = AsyncLoyaltyLayerWithRawResponse(self._cards, self._passes)

    def __repr__(self) -> str:
        return f"<AsyncLoyaltyLayer {self._transport.base_url}>"

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured from ``LOYALTYLAYER_CLIENT_ID``, ``_CLIENT_SECRET``, ``_BASE_URL``
        (and the optional ``_AUTH_URL``, ``_REDIS_URL``, ``_PROXY``, ``_CA_BUNDLE``,
        ``_CLIENT_CERT``, ``_CLIENT_KEY``, ``_TOKEN_AUTH_METHOD`` and ``_PRIVATE_KEY``: a PEM
        file's path, or the PEM itself); keyword arguments override them. With a private key,
        ``_CLIENT_SECRET`` is neither needed nor read.

        With ``LOYALTYLAYER_REDIS_URL`` set, the rate limit is shared through Redis by every
        process using that URL; the client closes the limiter it makes for it.
        """
        settings: dict[str, Any] = {
            "client_id": env(ENV_CLIENT_ID),
            "client_secret": secret_env(ENV_CLIENT_SECRET),
            "base_url": env(ENV_BASE_URL),
            "auth_url": env(ENV_AUTH_URL),
            "proxy": secret_env(ENV_PROXY),
            "ca_bundle": env(ENV_CA_BUNDLE),
            "client_cert": env(ENV_CLIENT_CERT),
            "client_key": env(ENV_CLIENT_KEY),
            "token_auth_method": env(ENV_TOKEN_AUTH_METHOD),
            "private_key": secret_env(ENV_PRIVATE_KEY),
        }
        method = overrides.get("token_auth_method", settings["token_auth_method"])
        private_key = overrides.get("private_key", settings["private_key"])
        if method == "private_key_jwt" or (method is None and private_key is not None):
            # The key replaces the secret: the environment's is neither needed nor read.
            settings["client_secret"] = None
            overrides.setdefault("client_secret", None)
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
    def with_raw_response(self) -> AsyncLoyaltyLayerWithRawResponse:
        """The same methods, each returning the HTTP reply with its model (an
        :class:`APIResponse`): ``client.with_raw_response.passes.status(pass_id)``."""
        return self._with_raw_response

    def with_options(
        self,
        *,
        timeout: float | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        deadline: float | NotGiven | None = NOT_GIVEN,
        priority: Literal["interactive", "batch"] | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
    ) -> Self:
        """This client with other options for its calls: ``client.with_options(timeout=5)``.

        The new client shares this one's session, connections, token, rate limiter and card
        keys: making one sends nothing, and closing either closes both. Options not given keep
        this client's values; ``extra_headers`` are added to every request (besides those it
        has already), and the SDK's own (``Authorization``, ``Idempotency-Key``,
        ``X-Correlation-ID``...) are refused with a :class:`ValidationError`.
        """
        options = evolve_options(
            self._channel.options,
            timeout=timeout,
            max_retries=max_retries,
            deadline=deadline,
            priority=priority,
            extra_headers=extra_headers,
        )
        view = copy.copy(self)
        view._attach(Channel(self._transport, options), self._cards)
        return view

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
        total: int | None = None,
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

        The job waits for the loop that takes its outcomes: a batch-create is sent only when
        all its outcomes have room to be handed out, so at most ``concurrency`` + 100 passes are
        made that the loop has not taken yet (each is in ``checkpoint``, with its pass id, for
        a rerun to report as ``skipped`` if the loop stops early).

        A plain iterable of records is read one record at a time, when the job needs the next,
        on a thread of the job's own (one per job); an async iterable, and the checkpoint's
        methods, run on the event loop (the client's own loop thread, for the sync client).

        A job that needs more than one window of the rate limit spreads its first window's
        requests evenly across the window; later windows repeat that shape, so the server sees
        a steady stream instead of a burst per window, and a pause delays one request rather
        than every request queued behind it. A job that fits in one window goes at once. To
        know which it is, the job reads up to a window of records ahead, unless ``total`` says
        how many records there are: then it reads a record only when a card is about to be
        tokenized, so a ``records`` that stops yielding stops the job within the records in
        flight (about ``concurrency``).
        """
        errors: dict[str, str] = {}
        check_id(errors, "plan_id", plan_id)
        if job_id is not None:
            check_id(errors, "job_id", job_id)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            errors["concurrency"] = "must be a whole number, 1 or more"
        if not isinstance(max_wait, int | float) or max_wait < 0:
            errors["max_wait"] = "must be a number of seconds, 0 or more"
        if total is not None and (
            not isinstance(total, int) or isinstance(total, bool) or total < 0
        ):
            errors["total"] = "must be a whole number, 0 or more"
        raise_if_invalid(errors)
        # The engine loads with the first job: most programs never enroll.
        from ._enroll import run_enrollment

        # One span per batch-create request, not one per record's tokenize.
        quiet = Channel(self._transport, self._channel.options, traced=False)
        outcomes = run_enrollment(
            self._cards._over(quiet),
            self._passes,
            records,
            plan_id=plan_id,
            job_id=job_id or f"job_{uuid.uuid4().hex}",
            checkpoint=checkpoint,
            concurrency=concurrency,
            max_wait=float(max_wait),
            limiter=self.limiter,
            total=total,
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
