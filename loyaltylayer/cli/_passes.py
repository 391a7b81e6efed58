"""``loyaltylayer pass status|update|cancel PASS_ID``: one pass at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._async._client import AsyncLoyaltyLayer
from .._convert import unstructure
from .._errors import AuthenticationError, LoyaltyLayerError, ValidationError
from .._models import HolderUpdate, Pass
from ._connect import Target, connect, private_key_option
from ._exit import CliError, ConfigurationProblem, UsageProblem
from ._network_options import network_options
from ._results import describe_error

__all__ = ["pass_group"]

_base_url = click.option(
    "--base-url", metavar="URL", help="API base URL [env: LOYALTYLAYER_BASE_URL]."
)
_as_json = click.option("--json", "as_json", is_flag=True, help="Print the pass as JSON.")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and name != "metadata":
            flat |= _flat(value, f"{prefix}{name}.")
        elif value is not None:
            flat[f"{prefix}{name}"] = value
    return flat


def _show(found: Pass, *, as_json: bool) -> None:
    data = unstructure(found)
    console = Console(highlight=False)
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in _flat(data).items():
        table.add_row(name, Text(value if isinstance(value, str) else json.dumps(value)))
    console.print(table)


def _run(target: Target, call: Callable[[AsyncLoyaltyLayer], Awaitable[Pass]]) -> Pass:
    async def main() -> Pass:
        async with connect(target, Console(stderr=True)) as connection:
            return await call(connection.client)

    try:
        return asyncio.run(main())
    except ValidationError as error:
        raise UsageProblem(str(error)) from None
    except AuthenticationError as error:
        raise ConfigurationProblem(describe_error(error)) from None
    except LoyaltyLayerError as error:
        raise CliError(describe_error(error)) from None


@click.group("pass")
def pass_group() -> None:
    """Read, change or cancel one pass."""


@pass_group.command("status")
@click.argument("pass_id")
@_base_url
@network_options
@private_key_option
@_as_json
def status_command(
    pass_id: str,
    base_url: str | None,
    network: dict[str, Any],
    private_key: Path | None,
    as_json: bool,
) -> None:
    """Show the pass PASS_ID as it is now."""
    target = Target(base_url=base_url, network=network, private_key=private_key)
    _show(_run(target, lambda client: client.passes.status(pass_id)), as_json=as_json)


@pass_group.command("update")
@click.argument("pass_id")
@click.option("--first-name")
@click.option("--last-name")
@click.option("--email")
@click.option("--phone", help="E.164, e.g. +442071234567.")
@click.option("--country", help="ISO 3166-1 alpha-2, e.g. GB.")
@click.option("--reference", help="Your own id for the pass.")
@_base_url
@network_options
@private_key_option
@_as_json
def update_command(
    pass_id: str,
    first_name: str | None,
    last_name: str | None,
    email: str | None,
    phone: str | None,
    country: str | None,
    reference: str | None,
    base_url: str | None,
    network: dict[str, Any],
    private_key: Path | None,
    as_json: bool,
) -> None:
    """Change the holder's details or the reference of PASS_ID (only what is given)."""
    fields = {
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "phone": phone,
        "country": country,
    }
    try:
        holder = HolderUpdate(**fields) if any(v is not None for v in fields.values()) else None
    except ValidationError as error:
        raise UsageProblem(str(error)) from None
    updated = _run(
        Target(base_url=base_url, network=network, private_key=private_key),
        lambda client: client.passes.update(pass_id, holder=holder, reference=reference),
    )
    _show(updated, as_json=as_json)


@pass_group.command("cancel")
@click.argument("pass_id")
@click.option("--reason", help="Why the pass is cancelled (kept with it).")
@_base_url
@network_options
@private_key_option
@_as_json
def cancel_command(
    pass_id: str,
    reason: str | None,
    base_url: str | None,
    network: dict[str, Any],
    private_key: Path | None,
    as_json: bool,
) -> None:
    """Cancel the pass PASS_ID."""
    target = Target(base_url=base_url, network=network, private_key=private_key)
    _show(_run(target, lambda client: client.passes.cancel(pass_id, reason)), as_json=as_json)
