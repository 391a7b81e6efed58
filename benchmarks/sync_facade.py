"""Figure 4: the sync facade's cost, against the same calls awaited one after another.

Both clients make the same sequential ``passes.status`` calls to the same sandbox subprocess; a
sync call runs the portal's event loop in the calling thread for its duration, which is the
overhead measured. The two clients stay open for the whole figure and take turns in short
blocks, paired in alternating order (``_harness.paired_rounds``): the load on a shared machine
changes over tens of milliseconds, so two blocks that close together see the same machine, and
hundreds of pairs pin the median down. (Whole runs of a few hundred calls each, the first way
this figure was measured, gave per-round ratios from 0.6 to 2.2.)

The awaited block is timed inside its coroutine, so running it on its loop is not counted
against the baseline.
"""

from __future__ import annotations

import asyncio
import time

from loyaltylayer import AsyncLoyaltyLayer, LoyaltyLayer

from ._harness import Goal, Paired, Profile, Row, paired_rounds, settle
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, tuple[int, int]] = {"smoke": (20, 4), "quick": (40, 40), "full": (40, 300)}
"""Sequential calls per block, and paired blocks, per profile."""
_WARM = 20


async def _awaited(client: AsyncLoyaltyLayer, pass_id: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await client.passes.status(pass_id)
    return time.perf_counter() - started


def _sync(client: LoyaltyLayer, pass_id: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        client.passes.status(pass_id)
    return time.perf_counter() - started


def run(profile: Profile) -> list[Row]:
    calls, blocks = CALLS[profile]
    with SandboxProcess.run(rate_key="off") as sandbox:
        url = sandbox.base_url
        pass_id = asyncio.run(create_pass(url))
        loop = asyncio.new_event_loop()
        awaited = AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, rate_limit=None)
        try:
            with LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, rate_limit=None) as sync:
                loop.run_until_complete(_awaited(awaited, pass_id, _WARM))
                _sync(sync, pass_id, _WARM)
                settle()
                wall = Paired.of(
                    paired_rounds(
                        blocks,
                        baseline=lambda: loop.run_until_complete(_awaited(awaited, pass_id, calls)),
                        measured=lambda: _sync(sync, pass_id, calls),
                    ),
                    float,
                )
        finally:
            loop.run_until_complete(awaited.close())
            loop.close()
    async_wall, sync_wall = wall.median_round
    return [
        Row(
            figure=f"4 sync facade: {blocks} paired blocks of {calls} sequential passes.status"
            " (median ratio)",
            measured=sync_wall,
            unit="s",
            baseline=async_wall,
            baseline_label="the same calls awaited",
            ratio=wall.ratio,
            goal=Goal("<=", 1.10),
            details={
                "calls_per_block": calls,
                "blocks": blocks,
                **wall.details(),
                "sync_us_per_call": round(sum(wall.measured) / (blocks * calls) * 1e6, 1),
                "async_us_per_call": round(sum(wall.baseline) / (blocks * calls) * 1e6, 1),
            },
        )
    ]
