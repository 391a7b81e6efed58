"""Figure 4: the sync client against what users would otherwise write, and its cost per call.

All make the same sequential ``passes.status`` calls to the same sandbox subprocess (limit off):
our sync client; ``requests.Session`` and ``httpx.Client`` doing the call by hand (a bearer token
fetched once, the JSON POST, the reply parsed); and the async client awaited, which the sync
client runs on its portal thread. Each round times one block of each, in rotating order, on
clients that stay open: the load on a shared machine changes over tens of milliseconds, so blocks
that close together see the same machine, and the medians over many rounds pin the figures down.

Two rows: the sync client's time against the faster of ``requests`` and ``httpx`` in the same
round (median of the per-round ratios), and what a sync call costs over the same call awaited,
in µs (median over the rounds of the per-call difference).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import requests

from loyaltylayer import AsyncLoyaltyLayer, LoyaltyLayer

from ._harness import Goal, Paired, Profile, Row, settle
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {"smoke": (10, 4), "quick": (40, 30), "full": (40, 200)}
"""Sequential calls per block, and rounds, per profile."""
_WARM = 20


def _by_hand(post: Callable[..., Any], base_url: str, pass_id: str) -> Callable[[], Any]:
    """What a ``requests`` or ``httpx`` user writes for the same call: ``post`` is the
    session's ``post``."""
    token_reply = post(
        f"{base_url}/auth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
        },
    )
    token = token_reply.json()["access_token"]
    url = f"{base_url}/v1/pass/status"

    def call() -> Any:
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Correlation-ID": f"ll-{uuid.uuid4().hex}",
            "Accept": "application/json",
        }
        reply = post(url, json={"pass_id": pass_id}, headers=headers)
        reply.raise_for_status()
        return reply.json()

    return call


def _block(call: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return time.perf_counter() - started


async def _awaited(client: AsyncLoyaltyLayer, pass_id: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await client.passes.status(pass_id)
    return time.perf_counter() - started


def run(profile: Profile) -> list[Row]:
    calls, rounds = CALLS[profile]
    with (
        SandboxProcess.run(rate_key="off") as sandbox,
        requests.Session() as session,
        httpx.Client() as httpx_client,
    ):
        url = sandbox.base_url
        pass_id = asyncio.run(create_pass(url))
        loop = asyncio.new_event_loop()
        awaited = AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, rate_limit=None)
        try:
            with LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, rate_limit=None) as sync:
                by_requests = _by_hand(session.post, url, pass_id)
                by_httpx = _by_hand(httpx_client.post, url, pass_id)
                contenders: dict[str, Callable[[int], float]] = {
                    "sync": lambda n: _block(lambda: sync.passes.status(pass_id), n),
                    "requests": lambda n: _block(by_requests, n),
                    "httpx": lambda n: _block(by_httpx, n),
                    "awaited": lambda n: loop.run_until_complete(_awaited(awaited, pass_id, n)),
                }
                for measure in contenders.values():
                    measure(_WARM)
                settle()
                names = list(contenders)
                timings: dict[str, list[float]] = {name: [] for name in names}
                for index in range(rounds):
                    for name in names[index % 4 :] + names[: index % 4]:
                        timings[name].append(contenders[name](calls))
        finally:
            loop.run_until_complete(awaited.close())
            loop.close()
    fastest = [min(r, h) for r, h in zip(timings["requests"], timings["httpx"], strict=True)]
    against = Paired(tuple(fastest), tuple(timings["sync"]))
    fastest_wall, sync_wall = against.median_round
    extra_us = [
        (s - a) / calls * 1e6 for s, a in zip(timings["sync"], timings["awaited"], strict=True)
    ]

    def per_call_us(name: str) -> float:
        return round(statistics.median(timings[name]) / calls * 1e6, 1)

    per_call = {f"{name}_us_per_call": per_call_us(name) for name in names}
    return [
        Row(
            figure=f"4 sync client: {rounds} rounds of {calls} sequential passes.status, against"
            " requests.Session / httpx.Client by hand (median ratio)",
            measured=sync_wall / calls * 1e6,
            unit="µs",
            baseline=fastest_wall / calls * 1e6,
            baseline_label="the faster of requests and httpx",
            ratio=against.ratio,
            goal=Goal("<=", 0.8),
            details={"calls_per_block": calls, "rounds": rounds, **per_call, **against.details()},
        ),
        Row(
            figure="4 sync client: cost of a sync call over the same call awaited",
            measured=round(statistics.median(extra_us), 1),
            unit="µs",
            goal=Goal("<=", 100, of="measured"),
            details={"per_round_us": [round(v, 1) for v in extra_us], **per_call},
        ),
    ]
