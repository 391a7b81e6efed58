"""Resources of the fixture client: ``client.cards`` and ``client.passes``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._client import AsyncLoyaltyLayer


class AsyncCards:
    """Card operations, reached as ``client.cards``."""

    def __init__(self, client: AsyncLoyaltyLayer) -> None:
        self._client = client

    async def tokenize(
        self,
        card: str,
        plan_id: str,
        card_type: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Echo the arguments through the server, so a test sees what reached the async side."""
        text = f"{card}:{plan_id}:{card_type}:{idempotency_key}"
        return await self._client.get(f"/echo/{text}")


class AsyncPasses:
    """Pass operations, reached as ``client.passes``."""

    def __init__(self, client: AsyncLoyaltyLayer) -> None:
        self._client = client

    async def status(self, pass_id: str, /) -> str:
        """The server's answer for ``pass_id`` (positional-only, to test forwarding)."""
        return await self._client.get(f"/echo/{pass_id}")

    async def fail(self, status: int) -> None:
        """Ask the server for ``status`` and raise :class:`FixtureAPIError` from aiohttp's error."""
        await self._client.get(f"/status/{status}")
