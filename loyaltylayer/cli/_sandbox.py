"""The sandbox from the command line: ``loyaltylayer sandbox`` and ``--sandbox``.

``loyaltylayer sandbox ...`` is the sandbox's own argparse command line (it needs no extra),
passed through untouched. ``--sandbox`` runs one on the command's own event loop, for trying
the SDK with no credentials.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import click

from ..sandbox import Sandbox, SandboxConfig

__all__ = ["embedded_sandbox", "sandbox_command"]


@contextlib.asynccontextmanager
async def embedded_sandbox() -> AsyncIterator[tuple[Sandbox, str, str]]:
    """A sandbox on loopback with its defaults; yields it and its demo client id and secret."""
    config = SandboxConfig()
    client_id, client_secret = next(iter(config.clients.items()))
    async with Sandbox(config) as sandbox:
        yield sandbox, client_id, client_secret


@click.command(
    "sandbox",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sandbox_command(args: tuple[str, ...]) -> None:
    """Serve a local, stateful LoyaltyLayer API sandbox (see: loyaltylayer sandbox --help)."""
    from ..sandbox._cli import main

    raise SystemExit(main(list(args)))
