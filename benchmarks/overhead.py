"""Figure 3: what the SDK's pipeline costs per request, against raw aiohttp doing the same.

Both send the same ``POST /v1/pass/status`` requests, with the same headers and the same number
in flight, over one session each, to the same sandbox subprocess (limit off). The sandbox runs on
the other core, and its CPU is read from ``/proc`` during each run: it is reported beside the
client's, so a reader can check that the client, not the server, set the pace.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs

from loyaltylayer import AsyncLoyaltyLayer

from ._cpu import process_cpu_seconds
from ._harness import Goal, Profile, Row
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {"smoke": (200, 1), "quick": (1500, 2), "full": (5000, 3)}
"""Calls per measurement and rounds (best of) per profile."""
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

    for _ in range(IN_FLIGHT):  # warm: connections open, token fetched
        await call()
    server_cpu, before, started = process_cpu_seconds(server_pid), os.times(), time.perf_counter()
    share, extra = divmod(calls, IN_FLIGHT)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(IN_FLIGHT)))
    wall, after = time.perf_counter() - started, os.times()
    return Timing(
        wall=wall,
        user=after.user - before.user,
        system=after.system - before.system,
        server_cpu=process_cpu_seconds(server_pid) - server_cpu,
    )


async def _raw(base_url: str, server_pid: int, pass_id: str, calls: int) -> Timing:
    """The baseline: what any aiohttp program must do for the same requests, and no more."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
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

        return await _timed(server_pid, calls, call)


async def _sdk(base_url: str, server_pid: int, pass_id: str, calls: int) -> Timing:
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        return await _timed(server_pid, calls, lambda: client.passes.status(pass_id))


def _best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.wall)


def _describe(timing: Timing, calls: int) -> dict[str, float]:
    return {
        "wall_s": round(timing.wall, 3),
        "client_cpu_us_per_request": round(timing.cpu / calls * 1e6, 1),
        "client_user_us_per_request": round(timing.user / calls * 1e6, 1),
        "client_system_us_per_request": round(timing.system / calls * 1e6, 1),
        "client_cpu_busy": round(timing.cpu / timing.wall, 3),
        "server_cpu_busy": round(timing.server_cpu / timing.wall, 3),
    }


def run(profile: Profile) -> list[Row]:
    calls, rounds = CALLS[profile]
    with SandboxProcess.run(rate_key="off") as sandbox:
        pid = sandbox.process.pid
        pass_id = asyncio.run(create_pass(sandbox.base_url))
        raw: list[Timing] = []
        sdk: list[Timing] = []
        for _ in range(rounds):  # interleaved, so drift in machine load hits both alike
            raw.append(asyncio.run(_raw(sandbox.base_url, pid, pass_id, calls)))
            sdk.append(asyncio.run(_sdk(sandbox.base_url, pid, pass_id, calls)))
    best_raw, best_sdk = _best(raw), _best(sdk)
    details = {
        "calls": calls,
        "in_flight": IN_FLIGHT,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "sdk": _describe(best_sdk, calls),
        "raw_aiohttp": _describe(best_raw, calls),
    }
    sdk_cpu_us = best_sdk.cpu / calls * 1e6
    raw_cpu_us = best_raw.cpu / calls * 1e6
    return [
        Row(
            figure=f"3 overhead: {calls} passes.status, wall",
            measured=best_sdk.wall,
            unit="s",
            baseline=best_raw.wall,
            baseline_label="raw aiohttp",
            ratio=best_sdk.wall / best_raw.wall,
            goal=Goal("<=", 1.15),
            details=details,
        ),
        Row(
            figure="3 overhead: client CPU per request",
            measured=sdk_cpu_us,
            unit="µs",
            baseline=raw_cpu_us,
            baseline_label="raw aiohttp",
            ratio=sdk_cpu_us / raw_cpu_us,
        ),
    ]
