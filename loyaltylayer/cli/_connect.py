"""Making the client a command talks through: from the environment, or the embedded sandbox.

A command's calls are batch calls: a web app's interactive calls on the same budget (one Redis
limiter) go first.

Credentials come only from the environment (``LOYALTYLAYER_CLIENT_ID``, ``_CLIENT_SECRET``),
never from flags: flags end up in shell history and process listings. ``--private-key`` names a
key *file*, and refuses a key given in its place.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import click
from rich.console import Console

from .._async._client import AsyncLoyaltyLayer
from .._config import ENV_BASE_URL, env
from .._errors import AuthenticationError, ConfigurationError, LoyaltyLayerError, ValidationError
from .._ratelimit import RateLimit
from ._exit import ConfigurationProblem, UsageProblem
from ._sandbox import embedded_sandbox

__all__ = [
    "SANDBOX_ENVIRONMENT",
    "Connection",
    "Target",
    "check_credentials",
    "connect",
    "private_key_option",
]

SANDBOX_ENVIRONMENT = "embedded-sandbox"


@attrs.frozen(kw_only=True)
class Target:
    """Where to send requests, and how fast."""

    sandbox: bool = False
    base_url: str | None = None
    redis_url: str | None = None
    rate: RateLimit = attrs.field(factory=RateLimit)
    network: Mapping[str, Any] = attrs.field(factory=dict)
    """Client options of ``--proxy``, ``--ca-bundle``, ``--client-cert``, ``--client-key``."""
    private_key: Path | None = None
    """A PEM file to authenticate with (``private_key_jwt``) instead of the client secret."""

    @property
    def environment(self) -> str:
        """What the results file records, so a rerun cannot mix sandbox and live results."""
        if self.sandbox:
            return SANDBOX_ENVIRONMENT
        return (self.base_url or env(ENV_BASE_URL) or "").rstrip("/")


def _key_file(_context: click.Context, _parameter: click.Parameter, value: str | None) -> Any:
    if value is not None and ("-----BEGIN" in value or "\n" in value):
        raise click.BadParameter(
            "give the path of a PEM file, never the key itself: a command line ends up in "
            "shell history and process listings"
        )
    return None if value is None else Path(value)


private_key_option = click.option(
    "--private-key",
    metavar="PATH",
    callback=_key_file,
    help="Authenticate with private_key_jwt: sign with the PEM private key in this file, "
    "instead of sending the client secret [env: LOYALTYLAYER_PRIVATE_KEY].",
)
"""``--private-key PATH``, for every command that talks to the API (pass it on to
:class:`Target`)."""


@attrs.frozen(kw_only=True)
class Connection:
    client: AsyncLoyaltyLayer
    environment: str


def _rate_limit(target: Target) -> Any:
    if target.redis_url is None:
        return target.rate
    from .. import RedisRateLimiter

    return RedisRateLimiter.from_url(
        target.redis_url, requests=target.rate.requests, per=target.rate.per
    )


@contextlib.asynccontextmanager
async def connect(target: Target, console: Console) -> AsyncIterator[Connection]:
    """The client for ``target``, closed on exit; configuration problems exit with code 3."""
    if target.sandbox and target.network:
        raise UsageProblem(
            "--sandbox runs a local sandbox: --proxy, --ca-bundle, --client-cert and "
            "--client-key are for a remote API"
        )
    if target.sandbox and target.private_key is not None:
        raise UsageProblem(
            "--private-key is for the API: the embedded sandbox uses its demo credentials"
        )
    async with contextlib.AsyncExitStack() as stack:
        try:
            if target.sandbox:
                sandbox, client_id, secret = await stack.enter_async_context(embedded_sandbox())
                console.print(
                    f"Using the embedded LoyaltyLayer sandbox at {sandbox.base_url} with its demo "
                    "credentials: nothing leaves this machine, and its passes are gone when "
                    "this command ends.",
                    style="bold yellow",
                    markup=False,
                    highlight=False,
                )
                client = AsyncLoyaltyLayer(
                    client_id,
                    secret,
                    sandbox.base_url,
                    rate_limit=_rate_limit(target),
                    priority="batch",
                )
            else:
                overrides: dict[str, Any] = {
                    "rate_limit": _rate_limit(target),
                    "priority": "batch",
                    **target.network,
                }
                if target.base_url is not None:
                    overrides["base_url"] = target.base_url
                if target.private_key is not None:
                    overrides["private_key"] = target.private_key
                client = AsyncLoyaltyLayer.from_env(**overrides)
        except (ConfigurationError, ValidationError) as error:
            raise ConfigurationProblem(str(error)) from None
        stack.push_async_callback(client.close)
        yield Connection(client=client, environment=target.environment)


async def check_credentials(client: AsyncLoyaltyLayer) -> int:
    """Get an access token and the card keys with it; returns how many keys the API serves.

    Authentication problems exit with code 3 before a job sends anything else. The token
    itself is never shown.
    """
    try:
        keys = await client.cards.encryption_keys()
    except AuthenticationError as error:
        raise ConfigurationProblem(
            f"the API refused the credentials ({error.error}: {error.description}); "
            "check LOYALTYLAYER_CLIENT_ID and LOYALTYLAYER_CLIENT_SECRET (or the private key)"
        ) from None
    except LoyaltyLayerError as error:
        raise ConfigurationProblem(f"cannot use the API: {error}") from None
    return len(keys.keys)
