"""OpenTelemetry spans and metrics, read with the OTel SDK's in-memory exporter and reader."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import aiohttp
import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sdk_env import (
    CLIENT_ID,
    CLIENT_SECRET,
    VISA,
    card,
    fresh_interpreter,
    holder,
    paths,
    running,
)

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, SandboxConfig, SandboxThread


@attrs.frozen
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    telemetry: ll.Telemetry
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of metric ``name``: sorted attributes -> value (a histogram's count)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted(point.attributes.items()))
                        found[key] = getattr(point, "value", getattr(point, "count", None))
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    yield Otel(
        spans,
        metrics,
        ll.Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider),
        tracer_provider,
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _route(path: str, outcome: str | None = None) -> tuple[tuple[str, Any], ...]:
    attributes = {"loyaltylayer.route": path}
    if outcome is not None:
        attributes["loyaltylayer.outcome"] = outcome
    return tuple(sorted(attributes.items()))


def _everything_recorded(otel: Otel) -> str:
    """Every name and value of every span, event and metric point, as one string."""
    parts: list[str] = []
    for span in otel.finished():
        parts += [span.name, json.dumps(dict(span.attributes or {}), default=str)]
        parts += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
    data = otel.metrics.get_metrics_data()
    parts.append(data.to_json() if data is not None else "")
    return "\n".join(parts)


@pytest.mark.looptime
async def test_a_call_is_a_client_span_under_the_callers_with_its_details(otel: Otel) -> None:
    async with running(telemetry=otel.telemetry) as (sandbox, client):
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        tracer = otel.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("checkout") as parent:
            await client.passes.status(created.pass_id)
        entry = paths(sandbox.journal(), "/v1/pass/status")[0]

    (span,) = otel.named("passes.status")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "url.full": f"{sandbox.base_url}/v1/pass/status",
        "server.address": "127.0.0.1",
        "server.port": sandbox.port,
        "loyaltylayer.correlation_id": entry.correlation_id,
        "loyaltylayer.attempts": 1,
        "loyaltylayer.lease_wait_seconds": 0.0,
        "http.response.status_code": 200,
        "loyaltylayer.replayed": False,
    }
    assert span.status.status_code is StatusCode.UNSET
    (create,) = otel.named("passes.create")
    assert create.attributes is not None
    assert create.attributes["loyaltylayer.idempotency_key"] == created.idempotency_key
    (token,) = otel.named("auth.token")  # fetched for the first call, inside its span
    assert token.parent is not None
    assert token.parent.span_id == create.context.span_id
    assert otel.points("loyaltylayer.requests") == {
        _route("/auth/token", "ok"): 1,
        _route("/v1/pass/create", "ok"): 1,
        _route("/v1/pass/status", "ok"): 1,
    }


@pytest.mark.looptime
async def test_retries_and_429_pauses_are_span_events_and_counted(otel: Otel) -> None:
    async with running(telemetry=otel.telemetry) as (sandbox, client):
        await client.cards.encryption_keys()
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=500, times=1))
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=429, times=1))
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        assert client.limiter.config is not None

    (span,) = otel.named("passes.create")
    assert span.attributes is not None
    assert span.attributes["loyaltylayer.attempts"] == 3
    assert span.attributes["loyaltylayer.idempotency_key"] == created.idempotency_key
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [name for name, _ in events] == ["retry", "rate_limited", "retry"]
    assert events[0][1]["error.type"] == "server_error"
    assert events[0][1]["loyaltylayer.attempt"] == 1
    assert events[1][1] == {"loyaltylayer.retry_after_seconds": 60.0}
    assert events[2][1] == {
        "loyaltylayer.attempt": 2,
        "loyaltylayer.wait_seconds": 60.0,
        "error.type": "rate_limit_exceeded",
    }
    assert otel.points("loyaltylayer.retries") == {
        _route("/v1/pass/create", "server_error"): 1,
        _route("/v1/pass/create", "rate_limit_exceeded"): 1,
    }
    assert otel.points("loyaltylayer.rate_limited") == {_route("/v1/pass/create", "retried"): 1}
    assert otel.points("loyaltylayer.lease.wait")[_route("/v1/pass/create")] == 1
    (leases,) = otel.points("loyaltylayer.leases.in_use").items()
    # Of the five (token, keys, three attempts), only the last attempt's is held: the others cooled
    # down in the pause, 60 s and the adaptive limiter's one-second margin, as long as a hold.
    assert leases == ((("server.address", "127.0.0.1"),), 1)


@pytest.mark.looptime
async def test_a_failed_call_has_its_error_code_and_status(otel: Otel) -> None:
    async with running(telemetry=otel.telemetry) as (_sandbox, client):
        with pytest.raises(ll.NotFoundError):
            await client.passes.status("nope")
    (span,) = otel.named("passes.status")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert (
        span.attributes["error.type"],
        span.attributes["loyaltylayer.error_code"],
        span.attributes["http.response.status_code"],
    ) == ("invalid_pass_id", "invalid_pass_id", 404)
    assert "loyaltylayer.replayed" not in span.attributes
    assert otel.points("loyaltylayer.requests")[_route("/v1/pass/status", "invalid_pass_id")] == 1


@pytest.mark.looptime
async def test_the_enrollment_engine_makes_one_span_per_batch_and_none_per_record(
    otel: Otel,
) -> None:
    records = [
        ll.EnrollRecord(card=card(), holder=holder(), reference=f"R{i}", key=f"k{i}")
        for i in range(5)
    ]
    async with running(telemetry=otel.telemetry) as (_sandbox, client):
        outcomes = [o async for o in client.enroll(records, plan_id="pp-gold", max_wait=0.0)]
    assert [o.status for o in outcomes] == ["created"] * 5
    names = sorted(span.name for span in otel.finished())
    batches = names.count("passes.batch_create")
    assert 1 <= batches <= 5
    assert names == ["auth.token"] + ["passes.batch_create"] * batches
    assert otel.points("loyaltylayer.requests")[_route("/v1/card/tokenize", "ok")] == 5


@pytest.mark.looptime
async def test_no_secret_card_data_or_body_is_recorded(otel: Otel) -> None:
    async with running(telemetry=otel.telemetry) as (sandbox, client):
        token = await client.cards.tokenize(card(), plan_id="pp-gold")
        created = await client.passes.create(
            plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
        )
        await client.passes.update(created.pass_id, reference="R-1")
        with pytest.raises(ll.NotFoundError):
            await client.passes.cancel("nope")
        journal = sandbox.journal()
    recorded = _everything_recorded(otel)
    assert journal  # the calls were made
    for secret in (CLIENT_SECRET, VISA, token.enrol_token, "sbx_at_", "eyJhbGci", "@example.com"):
        assert secret not in recorded
    assert "Lovelace" not in recorded


def test_the_sync_client_makes_the_same_spans_under_the_callers(otel: Otel) -> None:
    with (
        SandboxThread(SandboxConfig(rate_key="off", seed=1)) as sandbox,
        ll.LoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, sandbox.base_url, telemetry=otel.telemetry
        ) as client,
    ):
        tracer = otel.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("nightly-job") as parent:
            keys = client.cards.encryption_keys()
            assert client.with_raw_response.cards.encryption_keys().parse() == keys
    spans = otel.named("cards.encryption_keys")
    assert len(spans) == 2
    assert {span.parent.span_id for span in spans if span.parent} == {
        parent.get_span_context().span_id
    }
    assert otel.points("loyaltylayer.requests")[_route("/v1/card/encryption-keys", "ok")] == 2


async def test_trace_configs_see_every_attempt() -> None:
    seen: list[tuple[str, str]] = []

    async def on_request_start(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        seen.append((params.url.path, params.headers["X-Correlation-ID"]))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    async with running(trace_configs=[trace]) as (sandbox, client):
        sandbox.add_fault(
            Fault(route="/v1/card/encryption-keys", kind="status", status=502, times=1)
        )
        await client.cards.encryption_keys()
        journal = sandbox.journal()
    assert seen == [(e.path, e.correlation_id) for e in journal]
    assert [path for path, _ in seen] == ["/auth/token"] + ["/v1/card/encryption-keys"] * 2


async def test_bad_telemetry_arguments_are_refused() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ll.ValidationError) as caught:
            ll.AsyncLoyaltyLayer(
                CLIENT_ID,
                CLIENT_SECRET,
                "https://api.example.com",
                telemetry="yes",  # type: ignore[arg-type]
                session=session,
                trace_configs=[aiohttp.TraceConfig()],
            )
    assert caught.value.errors == {
        "telemetry": "must be True, False or a loyaltylayer.Telemetry",
        "trace_configs": "are for the session the client opens: add them to yours",
    }


PROBE = textwrap.dedent(
    """
    import json, sys
    mode = sys.argv[1]
    if mode == "missing":
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
    if mode == "global":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    import loyaltylayer as ll
    from loyaltylayer.sandbox import SandboxConfig, SandboxThread
    out = {}
    with SandboxThread(SandboxConfig(rate_key="off")) as sandbox:
        try:
            client = ll.LoyaltyLayer(
                "sandbox-client", "sandbox-secret", sandbox.base_url, telemetry=mode != "off"
            )
        except ll.ValidationError as error:
            out["errors"] = error.errors
        else:
            with client:
                client.cards.encryption_keys()
    loaded = [m for m, module in sys.modules.items() if module and m.startswith("opentelemetry")]
    out["otel_loaded"] = sorted(loaded)
    if mode == "global":
        out["spans"] = [span.name for span in exporter.get_finished_spans()]
    print(json.dumps(out))
    """
)


def _probe(mode: str) -> dict[str, Any]:
    out: dict[str, Any] = fresh_interpreter(PROBE, mode)
    return out


def test_without_telemetry_opentelemetry_is_never_imported() -> None:
    assert _probe("off") == {"otel_loaded": []}


def test_telemetry_true_uses_the_global_providers() -> None:
    out = _probe("global")
    assert out["spans"] == ["auth.token", "cards.encryption_keys"]


def test_telemetry_without_the_extra_says_what_to_install() -> None:
    assert _probe("missing") == {
        "errors": {"telemetry": "needs OpenTelemetry: pip install 'loyaltylayer[otel]'"},
        "otel_loaded": [],
    }
