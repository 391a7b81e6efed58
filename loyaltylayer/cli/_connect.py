"""Making the client a command talks through: from the environment, or the embedded sandbox.

A command's calls are batch calls: a web app's interactive calls on the same budget (one Redis
limiter) go first.

Credentials come only from the environment (``LOYALTYLAYER_CLIENT_ID``, ``_CLIENT_SECRET``),
never from flags: flags end up in shell history and process listings.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
from rich.console import Console

from .._async._client import AsyncLoyaltyLayer
from .._config import ENV_BASE_URL, env
from .._errors import AuthenticationError, ConfigurationError, LoyaltyLayerError, ValidationError
from .._ratelimit import RateLimit
from ._exit import ConfigurationProblem
from ._sandbox import embedded_sandbox

__all__ = ["SANDBOX_ENVIRONMENT", "Connection", "Target", "check_credentials", "connect"]

SANDBOX_ENVIRONMENT = "embedded-sandbox"


@attrs.frozen(kw_only=True)
class Target:
    """Where to send requests, and how fast."""

    sandbox: bool = False
    base_url: str | None = None
    redis_url: str | None = None
    rate: RateLimit = attrs.field(factory=RateLimit)

    @property
    def environment(self) -> str:
        """What the results file records, so a rerun cannot mix sandbox and live results."""
        if self.sandbox:
            return SANDBOX_ENVIRONMENT
        return (self.base_url or env(ENV_BASE_URL) or "").rstrip("/")


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
                overrides: dict[str, Any] = {"rate_limit": _rate_limit(target), "priority": "batch"}
                if target.base_url is not None:
                    overrides["base_url"] = target.base_url
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
            "check LOYALTYLAYER_CLIENT_ID and LOYALTYLAYER_CLIENT_SECRET"
        ) from None
    except LoyaltyLayerError as error:
        raise ConfigurationProblem(f"cannot use the API: {error}") from None
    return len(keys.keys)
