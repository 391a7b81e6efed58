"""Figure 6: a thousand calls find the access token expired; how many token requests follow.

Two ways a token runs out: the client knows (its lifetime has passed), or only the server knows
(its clock moved on, every call gets 401 ``invalid_token``). Either way the goal is one request.
"""

from __future__ import annotations

import asyncio

from loyaltylayer import AsyncLoyaltyLayer

from ._harness import Goal, Profile, Row
from ._passes import create_pass
from ._servers import CLIENT_ID, CLIENT_SECRET, SandboxProcess

__all__ = ["run"]

CALLS: dict[Profile, int] = {"smoke": 100, "quick": 1000, "full": 1000}
_TTL = 1.0
"""Token lifetime in the sandbox for the client-side case: short, so the wait is short."""


async def _burst(
    base_url: str, pass_id: str, calls: int, expire: str, sandbox: SandboxProcess
) -> None:
    async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as client:
        await client.passes.status(pass_id)  # the token now in hand
        if expire == "client":
            await asyncio.sleep(_TTL + 0.1)
        else:
            await asyncio.to_thread(sandbox.advance_clock, 3600.0)
        await asyncio.to_thread(sandbox.clear_journal)
        await asyncio.gather(*(client.passes.status(pass_id) for _ in range(calls)))


def run(profile: Profile) -> list[Row]:
    calls = CALLS[profile]
    rows = []
    for expire, ttl, label in (
        ("client", _TTL, "lifetime passed"),
        ("server", 1800.0, "server says 401 invalid_token"),
    ):
        with SandboxProcess.run(rate_key="off", extra=["--token-ttl", str(ttl)]) as sandbox:
            pass_id = asyncio.run(create_pass(sandbox.base_url))
            asyncio.run(_burst(sandbox.base_url, pass_id, calls, expire, sandbox))
            journal = sandbox.journal()
        token_requests = sum(1 for e in journal if e["path"] == "/auth/token")
        rejected = sum(1 for e in journal if e["status"] == 401)
        rows.append(
            Row(
                figure=f"6 token single-flight: {calls} concurrent calls, {label}",
                measured=token_requests,
                unit="token requests",
                baseline=1,
                baseline_label="one refresh",
                ratio=token_requests / 1,
                goal=Goal("==", 1),
                details={"calls": calls, "rejected_401": rejected, "requests": len(journal)},
            )
        )
    return rows
