"""``loyaltylayer token``: check the credentials in the environment (the token is never shown)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .._config import ENV_CLIENT_ID, env
from ._connect import Target, check_credentials, connect, private_key_option
from ._network_options import network_options

__all__ = ["token_command"]


@click.command("token")
@click.option("--base-url", metavar="URL", help="API base URL [env: LOYALTYLAYER_BASE_URL].")
@network_options
@private_key_option
def token_command(base_url: str | None, network: dict[str, Any], private_key: Path | None) -> None:
    """Get an access token with the credentials in the environment, to check them.

    The token itself is never printed: it is a bearer credential.
    """
    target = Target(base_url=base_url, network=network, private_key=private_key)
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
