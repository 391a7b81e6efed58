"""``loyaltylayer token``: check the credentials in the environment (the token is never shown)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console

from .._config import ENV_CLIENT_ID, env
from ._connect import Target, check_credentials, connect, private_key_option

__all__ = ["token_command"]


@click.command("token")
@click.option("--base-url", metavar="URL", help="API base URL [env: LOYALTYLAYER_BASE_URL].")
@private_key_option
def token_command(base_url: str | None, private_key: Path | None) -> None:
    """Get an access token with the credentials in the environment, to check them.

    The token itself is never printed: it is a bearer credential.
    """
    target = Target(base_url=base_url, private_key=private_key)
    console = Console(highlight=False)

    async def main() -> int:
        async with connect(target, Console(stderr=True)) as connection:
            return await check_credentials(connection.client)

    keys = asyncio.run(main())
    console.print(
        f"Credentials OK: {env(ENV_CLIENT_ID)} got an access token from {target.environment} "
        f"(not shown) and {keys} card encryption key(s).",
        markup=False,
        soft_wrap=True,
    )
