"""Figure 4: the sync facade's cost, against the same calls awaited one after another.

Both make the same sequential ``passes.status`` calls to the same sandbox subprocess; the sync
client runs each on its background event loop thread, which is the overhead measured.
"""

from __future__ import annotations

import asyncio
import time

from loyaltylayer import AsyncLoyaltyLayer, LoyaltyLayer

from ._harness import Goal, Profile, Row
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {"smoke": (100, 1), "quick": (500, 2), "full": (2000, 3)}
"""Sequential calls per measurement and rounds (best of) per profile."""
_WARM = 5


async def _async_calls(base_url: str, pass_id: str, calls: int) -> float:
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        for _ in range(_WARM):
            await client.passes.status(pass_id)
        started = time.perf_counter()
        for _ in range(calls):
            await client.passes.status(pass_id)
        return time.perf_counter() - started


def _sync_calls(base_url: str, pass_id: str, calls: int) -> float:
    with LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        for _ in range(_WARM):
            client.passes.status(pass_id)
        started = time.perf_counter()
        for _ in range(calls):
            client.passes.status(pass_id)
        return time.perf_counter() - started


def run(profile: Profile) -> list[Row]:
    calls, rounds = CALLS[profile]
    with SandboxProcess.run(rate_key="off") as sandbox:
        pass_id = asyncio.run(create_pass(sandbox.base_url))
        sync_walls, async_walls = [], []
        for _ in range(rounds):  # interleaved, so drift in machine load hits both alike
            async_walls.append(asyncio.run(_async_calls(sandbox.base_url, pass_id, calls)))
            sync_walls.append(_sync_calls(sandbox.base_url, pass_id, calls))
    best_sync, best_async = min(sync_walls), min(async_walls)
    return [
        Row(
            figure=f"4 sync facade: {calls} sequential passes.status",
            measured=best_sync,
            unit="s",
            baseline=best_async,
            baseline_label="the same calls awaited",
            ratio=best_sync / best_async,
            goal=Goal("<=", 1.10),
            details={
                "calls": calls,
                "rounds": rounds,
                "sync_us_per_call": round(best_sync / calls * 1e6, 1),
                "async_us_per_call": round(best_async / calls * 1e6, 1),
            },
        )
    ]
