"""Figure 4: the sync facade's cost, against the same calls awaited one after another.

Both make the same sequential ``passes.status`` calls to the same sandbox subprocess; the sync
client runs each on its background event loop thread, which is the overhead measured. The two
run in paired rounds (``_harness.paired_rounds``).
"""

from __future__ import annotations

import asyncio
import time

from loyaltylayer import AsyncLoyaltyLayer, LoyaltyLayer

from ._harness import Goal, Paired, Profile, Row, paired_rounds, settle
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {"smoke": (50, 2), "quick": (200, 6), "full": (200, 60)}
"""Sequential calls per side in a round, and paired rounds, per profile."""
_WARM = 5


async def _async_calls(base_url: str, pass_id: str, calls: int) -> float:
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        for _ in range(_WARM):
            await client.passes.status(pass_id)
        settle()
        started = time.perf_counter()
        for _ in range(calls):
            await client.passes.status(pass_id)
        return time.perf_counter() - started


def _sync_calls(base_url: str, pass_id: str, calls: int) -> float:
    with LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        for _ in range(_WARM):
            client.passes.status(pass_id)
        settle()
        started = time.perf_counter()
        for _ in range(calls):
            client.passes.status(pass_id)
        return time.perf_counter() - started


def run(profile: Profile) -> list[Row]:
    calls, rounds = CALLS[profile]
    with SandboxProcess.run(rate_key="off") as sandbox:
        url = sandbox.base_url
        pass_id = asyncio.run(create_pass(url))
        wall = Paired.of(
            paired_rounds(
                rounds,
                baseline=lambda: asyncio.run(_async_calls(url, pass_id, calls)),
                measured=lambda: _sync_calls(url, pass_id, calls),
            ),
            float,
        )
    async_wall, sync_wall = wall.median_round
    return [
        Row(
            figure=f"4 sync facade: {calls} sequential passes.status"
            f" (median of {rounds} paired rounds)",
            measured=sync_wall,
            unit="s",
            baseline=async_wall,
            baseline_label="the same calls awaited",
            ratio=wall.ratio,
            goal=Goal("<=", 1.10),
            details={
                "calls_per_round": calls,
                "rounds": rounds,
                **wall.details(),
                "sync_us_per_call": round(sync_wall / calls * 1e6, 1),
                "async_us_per_call": round(async_wall / calls * 1e6, 1),
            },
        )
    ]
