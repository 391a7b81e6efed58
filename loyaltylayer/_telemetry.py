"""OpenTelemetry spans and metrics, for a client made with ``telemetry=`` (the ``otel`` extra).

A client without it never imports OpenTelemetry, and its calls do no telemetry work beyond one
``None`` check each.

Spans: one per logical call, named ``<resource>.<method>`` (``passes.status``), a child of the
caller's current span, with the call's correlation id, idempotency key, attempts, lease wait,
HTTP status and error code; its retries and 429 pauses are span events. Never a secret, a card
number or a body: only the values listed in ``_finish`` and ``failed_attempt``.

Metrics: counters of calls (``loyaltylayer.requests``), retries (``loyaltylayer.retries``) and
429 replies (``loyaltylayer.rate_limited``) by route and outcome, a histogram of each call's
lease wait (``loyaltylayer.lease.wait``) and a gauge of the in-process limiter's leases held
(``loyaltylayer.leases.in_use``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
    UnexpectedResponseError,
)
from ._ratelimit import LeaseLimiter, Limiter
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from ._transport import Response, _Call

__all__ = ["Instrumentation", "Telemetry"]

SPAN_NAMES = {
    "/auth/token": "auth.token",
    "/v1/card/encryption-keys": "cards.encryption_keys",
    "/v1/card/tokenize": "cards.tokenize",
    "/v1/pass/create": "passes.create",
    "/v1/pass/batch-create": "passes.batch_create",
    "/v1/pass/status": "passes.status",
    "/v1/pass/update": "passes.update",
    "/v1/pass/cancel": "passes.cancel",
}
"""The span of each route: the resource method that calls it."""

_LEASE_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@attrs.frozen(kw_only=True)
class Telemetry:
    """Where a client's spans and metrics go: ``telemetry=ll.Telemetry(...)``.

    Either provider left ``None`` is OpenTelemetry's global one (``telemetry=True`` takes both),
    looked up at each use, so one set up after the client is made is still used.
    """

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None


def error_code(error: BaseException) -> str:
    """The outcome a failed call is counted under: the API's error code, or what went wrong."""
    if isinstance(error, APIStatusError):
        return error.error
    if isinstance(error, APITimeoutError):
        return "timeout"
    if isinstance(error, APIConnectionError):
        return "connection_error"
    if isinstance(error, UnexpectedResponseError):
        return "unexpected_response"
    return type(error).__name__


class _Instruments:
    """The metric instruments of one meter provider, made once: instruments are named, and a
    second client making them again would get the first one's (and lose its gauge callback)."""

    def __init__(self, meter: Meter) -> None:
        self.requests = meter.create_counter(
            "loyaltylayer.requests", "{request}", "Logical API calls, by route and outcome."
        )
        self.retries = meter.create_counter(
            "loyaltylayer.retries", "{retry}", "Attempts retried, by route and the error."
        )
        self.rate_limited = meter.create_counter(
            "loyaltylayer.rate_limited",
            "{reply}",
            "429 replies, by route and whether the call was retried or raised.",
        )
        self.lease_wait = meter.create_histogram(
            "loyaltylayer.lease.wait",
            "s",
            "Seconds each call waited for the rate limiter, all its attempts added up.",
            explicit_bucket_boundaries_advisory=_LEASE_WAIT_BUCKETS,
        )
        self.limiters: weakref.WeakKeyDictionary[Limiter, str] = weakref.WeakKeyDictionary()
        """The limiters of the clients using these instruments, and the host each paces."""
        meter.create_observable_gauge(
            "loyaltylayer.leases.in_use",
            [self._leases_in_use],
            "{lease}",
            "Leases of the in-process limiter held: in flight, or cooling down after the reply.",
        )

    def _leases_in_use(self, _options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for limiter, host in list(self.limiters.items()):
            if isinstance(limiter, LeaseLimiter):
                yield Observation(limiter.stats.held, {"server.address": host})


_BY_PROVIDER: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()
_GLOBAL: list[_Instruments] = []


def _instruments(provider: MeterProvider | None) -> _Instruments:
    from opentelemetry import metrics

    if provider is None:
        if not _GLOBAL:
            _GLOBAL.append(_Instruments(metrics.get_meter("loyaltylayer", __version__)))
        return _GLOBAL[0]
    if provider not in _BY_PROVIDER:
        meter = metrics.get_meter("loyaltylayer", __version__, meter_provider=provider)
        _BY_PROVIDER[provider] = _Instruments(meter)
    return _BY_PROVIDER[provider]


class Instrumentation:
    """The telemetry of one client: the transport calls it around each call and failure."""

    def __init__(self, config: Telemetry, base_url: str) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer(
            "loyaltylayer", __version__, tracer_provider=config.tracer_provider
        )
        self._metrics = _instruments(config.meter_provider)
        url = urlsplit(base_url)
        self._host = url.hostname or ""
        self._server: dict[str, str | int] = {
            "server.address": self._host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }

    def watch(self, limiter: Limiter) -> None:
        """Report the leases ``limiter`` holds (it is made with the client's first call)."""
        self._metrics.limiters[limiter] = self._host

    async def observe(
        self, call: _Call, run: Callable[[_Call], Awaitable[Response]], *, traced: bool
    ) -> Response:
        """``run(call)``, in a span of its own when ``traced``, counted either way."""
        span = None
        if traced:
            span = self._tracer.start_span(
                SPAN_NAMES.get(call.path, f"{call.method} {call.path}"),
                kind=self._trace.SpanKind.CLIENT,
                attributes={
                    "http.request.method": call.method,
                    "url.full": call.url,
                    **self._server,
                    "loyaltylayer.correlation_id": call.correlation_id,
                },
            )
            call.span = span
        with self._current(span):
            try:
                response = await run(call)
            except BaseException as error:
                self._finish(call, None, error)
                raise
            self._finish(call, response, None)
            return response

    def _current(self, span: Span | None) -> contextlib.AbstractContextManager[Any]:
        if span is None:
            return contextlib.nullcontext()
        return self._trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        )

    def _finish(self, call: _Call, response: Response | None, error: BaseException | None) -> None:
        outcome = "ok" if error is None else error_code(error)
        route = {"loyaltylayer.route": call.path}
        self._metrics.requests.add(1, route | {"loyaltylayer.outcome": outcome})
        self._metrics.lease_wait.record(call.lease_wait, route)
        span = call.span
        if span is None:
            return
        status = response.status if response is not None else getattr(error, "status", None)
        attributes: dict[str, Any] = {
            "loyaltylayer.attempts": call.attempts,
            "loyaltylayer.lease_wait_seconds": call.lease_wait,
        }
        if call.idempotency_key is not None:
            attributes["loyaltylayer.idempotency_key"] = call.idempotency_key
        if isinstance(status, int):
            attributes["http.response.status_code"] = status
        if response is not None:
            attributes["loyaltylayer.replayed"] = response.replayed
        else:
            attributes["error.type"] = outcome
            attributes["loyaltylayer.error_code"] = outcome
            span.set_status(self._trace.StatusCode.ERROR)
        span.set_attributes(attributes)

    def failed_attempt(self, call: _Call, error: BaseException, wait: float | None) -> None:
        """An attempt of ``call`` failed with ``error``; it is retried after ``wait`` seconds
        (``None``: the call ends with it)."""
        route = {"loyaltylayer.route": call.path}
        span = call.span
        if isinstance(error, RateLimitError):
            outcome = "retried" if wait is not None else "raised"
            self._metrics.rate_limited.add(1, route | {"loyaltylayer.outcome": outcome})
            if span is not None:
                span.add_event(
                    "rate_limited",
                    {"loyaltylayer.retry_after_seconds": float(error.retry_after or 0.0)},
                )
        if wait is None:
            return
        code = error_code(error)
        self._metrics.retries.add(1, route | {"loyaltylayer.outcome": code})
        if span is not None:
            span.add_event(
                "retry",
                {
                    "loyaltylayer.attempt": call.attempts,
                    "loyaltylayer.wait_seconds": float(wait),
                    "error.type": code,
                },
            )
