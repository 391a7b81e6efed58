"""Figure 3: what the SDK's pipeline costs per request, against raw aiohttp doing the same.

Both send the same ``POST /v1/pass/status`` requests, with the same headers and the same number
in flight, over one session each, to the same sandbox subprocess (limit off). The two stay open
on one event loop for the whole figure and take turns in short blocks, paired in alternating
order (``_harness.paired_rounds``), as figure 4 does: blocks that close together see the same
machine. The sandbox runs on the other core, and its CPU is read from ``/proc`` during each
block: it is reported beside the client's, so a reader can check that the client, not the
server, set the pace.

The SDK is measured twice: as it comes (telemetry off: the goal), and with telemetry on and the
OpenTelemetry SDK configured as a service would (a batch span processor and a metric reader;
the exporters drop what they are handed, so no export I/O is timed), each against raw aiohttp
in rounds of its own.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs

from loyaltylayer import AsyncLoyaltyLayer, Telemetry

from ._cpu import process_cpu_seconds
from ._harness import Goal, Paired, Profile, Row, paired_rounds, settle
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {
    "smoke": (100, 4),
    "quick": (200, 30),
    "full": (200, 150),
}
"""Calls per block, and paired blocks, per profile."""
IN_FLIGHT = 8


@attrs.frozen(kw_only=True)
class Timing:
    wall: float
    user: float
    system: float
    server_cpu: float

    @property
    def cpu(self) -> float:
        return self.user + self.system


async def _timed(server_pid: int, calls: int, call: Callable[[], Awaitable[Any]]) -> Timing:
    """``calls`` calls, ``IN_FLIGHT`` at a time; wall and CPU of this process and the server."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    # getrusage, not os.times(): a round lasts a fraction of a second; os.times() counts 10 ms.
    server_cpu, before = process_cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    share, extra = divmod(calls, IN_FLIGHT)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(IN_FLIGHT)))
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return Timing(
        wall=wall,
        user=after.ru_utime - before.ru_utime,
        system=after.ru_stime - before.ru_stime,
        server_cpu=process_cpu_seconds(server_pid) - server_cpu,
    )


async def _raw_call(
    session: aiohttp.ClientSession, base_url: str, pass_id: str
) -> Callable[[], Awaitable[Any]]:
    """The baseline: what any aiohttp program must do for the same requests, and no more."""
    async with session.post(
        f"{base_url}/auth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
        },
    ) as reply:
        token = (await reply.json())["access_token"]
    url = f"{base_url}/v1/pass/status"

    async def call() -> Any:
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Correlation-ID": f"ll-{uuid.uuid4().hex}",
            "Accept": "application/json",
        }
        async with session.post(url, json={"pass_id": pass_id}, headers=headers) as reply:
            reply.raise_for_status()
            return await reply.json()

    return call


def _configured_otel() -> tuple[Telemetry, Callable[[], None]]:
    """Telemetry to an OTel SDK set up as a service would, and how to shut it down."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return telemetry, shutdown


def _paired_blocks(
    base_url: str,
    server_pid: int,
    pass_id: str,
    calls: int,
    blocks: int,
    telemetry: Telemetry | None = None,
) -> list[tuple[Timing, Timing]]:
    """``(raw aiohttp, SDK)`` timings of each pair of blocks, both clients warm throughout."""
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_new_session())
    client = AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None, telemetry=telemetry or False
    )
    try:
        raw = loop.run_until_complete(_raw_call(session, base_url, pass_id))

        def sdk() -> Awaitable[Any]:
            return client.passes.status(pass_id)

        for call in (raw, sdk):  # warm: connections open, token fetched
            loop.run_until_complete(_timed(server_pid, IN_FLIGHT, call))
        settle()
        return paired_rounds(
            blocks,
            baseline=lambda: loop.run_until_complete(_timed(server_pid, calls, raw)),
            measured=lambda: loop.run_until_complete(_timed(server_pid, calls, sdk)),
        )
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(session.close())
        loop.close()


async def _new_session() -> aiohttp.ClientSession:
    # Made on the loop it is used on: aiohttp binds a session to the running loop.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))


def _describe(timings: list[Timing], calls: int) -> dict[str, float]:
    """Each quantity's median over the blocks of one side."""

    def median(value: Callable[[Timing], float], digits: int = 1) -> float:
        return round(statistics.median(value(t) for t in timings), digits)

    return {
        "wall_s": median(lambda t: t.wall, 3),
        "wall_us_per_call": median(lambda t: t.wall / calls * 1e6),
        "client_cpu_us_per_request": median(lambda t: t.cpu / calls * 1e6),
        "client_user_us_per_request": median(lambda t: t.user / calls * 1e6),
        "client_system_us_per_request": median(lambda t: t.system / calls * 1e6),
        "client_cpu_busy": median(lambda t: t.cpu / t.wall, 3),
        "server_cpu_busy": median(lambda t: t.server_cpu / t.wall, 3),
    }


def run(profile: Profile) -> list[Row]:
    calls, blocks = CALLS[profile]
    with SandboxProcess.run(rate_key="off") as sandbox:
        url, pid = sandbox.base_url, sandbox.process.pid
        pass_id = asyncio.run(create_pass(url))
        pairs = _paired_blocks(url, pid, pass_id, calls, blocks)
        telemetry, shutdown = _configured_otel()
        try:
            traced = _paired_blocks(url, pid, pass_id, calls, blocks, telemetry)
        finally:
            shutdown()
    return [*_rows(pairs, calls, blocks, ""), *_rows(traced, calls, blocks, " with telemetry")]


def _rows(pairs: list[tuple[Timing, Timing]], calls: int, blocks: int, kind: str) -> list[Row]:
    """The wall-time row (judged by the goal with telemetry off) and the CPU row of one side."""
    wall = Paired.of(pairs, lambda t: t.wall)
    cpu = Paired.of(pairs, lambda t: t.cpu / calls * 1e6)
    details = {
        "calls_per_block": calls,
        "in_flight": IN_FLIGHT,
        "blocks": blocks,
        "cpus": os.cpu_count(),
        **wall.details(),
        "sdk": _describe([sdk for _, sdk in pairs], calls),
        "raw_aiohttp": _describe([raw for raw, _ in pairs], calls),
    }
    raw_wall, sdk_wall = wall.median_round
    raw_cpu, sdk_cpu = cpu.median_round
    return [
        Row(
            figure=f"3 overhead{kind}: {blocks} paired blocks of {calls} passes.status, wall"
            " (median ratio)",
            measured=sdk_wall,
            unit="s",
            baseline=raw_wall,
            baseline_label="raw aiohttp",
            ratio=wall.ratio,
            goal=None if kind else Goal("<=", 1.15),
            note="OTel SDK: batch span processor, metric reader" if kind else "",
            details=details,
        ),
        Row(
            figure=f"3 overhead{kind}: client CPU per request",
            measured=sdk_cpu,
            unit="µs",
            baseline=raw_cpu,
            baseline_label="raw aiohttp",
            ratio=cpu.ratio,
            details=cpu.details(),
        ),
    ]
