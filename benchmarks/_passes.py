"""A pass to read back: figures 3 and 4 measure ``passes.status`` on one existing pass."""

from __future__ import annotations

from loyaltylayer import AsyncLoyaltyLayer, Card, Holder

from ._servers import CLIENT_ID, CLIENT_SECRET, PLAN_ID

__all__ = ["create_pass"]


async def create_pass(base_url: str, client: AsyncLoyaltyLayer | None = None) -> str:
    """Tokenize a card and create its pass; the pass id. With ``client``, through it (its
    budget), else through a client of its own that does not pace."""
    if client is None:
        async with AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, base_url, rate_limit=None) as own:
            return await create_pass(base_url, own)
    card = Card(number="4111111111111111", expiry="12/39", name="ADA LOVELACE", cvv="123")
    token = await client.cards.tokenize(card, plan_id=PLAN_ID)
    created = await client.passes.create(
        plan_id=PLAN_ID,
        enrol_token=token.enrol_token,
        holder=Holder(first_name="Ada", last_name="Lovelace", email="ada@example.com"),
    )
    return created.pass_id
