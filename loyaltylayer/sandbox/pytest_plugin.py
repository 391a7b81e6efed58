"""pytest fixtures for tests against a LoyaltyLayer sandbox (entry point ``loyaltylayer``).

Light to import: the sandbox itself is imported inside the fixtures. No hooks and no autouse
fixtures; opt out with ``-p no:loyaltylayer``. Override ``loyaltylayer_sandbox_config`` in a
``conftest.py`` to customise the sandboxes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from loyaltylayer import AsyncLoyaltyLayer, LoyaltyLayer
    from loyaltylayer.sandbox import Sandbox, SandboxConfig, SandboxThread

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    """pytest-asyncio's fixture decorator (needed in its strict mode), plain pytest's without it."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - the plugin must load even without pytest-asyncio
        return cast(_F, pytest.fixture(function))
    return cast(_F, pytest_asyncio.fixture(function))


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:
    """The configuration of the sandbox fixtures (defaults: demo client, three plans)."""
    from loyaltylayer.sandbox import SandboxConfig

    return SandboxConfig()


@_async_fixture
async def loyaltylayer_sandbox(
    loyaltylayer_sandbox_config: SandboxConfig,
) -> AsyncIterator[Sandbox]:
    """A fresh sandbox on the test's event loop (shares ``looptime`` virtual time with it)."""
    from loyaltylayer.sandbox import Sandbox

    async with Sandbox(loyaltylayer_sandbox_config) as sandbox:
        yield sandbox


@pytest.fixture
def loyaltylayer_sandbox_thread(
    loyaltylayer_sandbox_config: SandboxConfig,
) -> Iterator[SandboxThread]:
    """A fresh sandbox on a background thread, for synchronous tests."""
    from loyaltylayer.sandbox import SandboxThread

    with SandboxThread(loyaltylayer_sandbox_config) as sandbox:
        yield sandbox


def _demo_credentials(config: SandboxConfig) -> tuple[str, str]:
    client_id, client_secret = next(iter(config.clients.items()))
    return client_id, client_secret


@_async_fixture
async def loyaltylayer_async_client(
    loyaltylayer_sandbox: Sandbox,
) -> AsyncIterator[AsyncLoyaltyLayer]:
    """An ``AsyncLoyaltyLayer`` signed in to ``loyaltylayer_sandbox`` as its first client."""
    from loyaltylayer import AsyncLoyaltyLayer

    client_id, client_secret = _demo_credentials(loyaltylayer_sandbox.config)
    async with AsyncLoyaltyLayer(client_id, client_secret, loyaltylayer_sandbox.base_url) as client:
        yield client


@pytest.fixture
def loyaltylayer_client(loyaltylayer_sandbox_thread: SandboxThread) -> Iterator[LoyaltyLayer]:
    """A synchronous ``LoyaltyLayer`` signed in to ``loyaltylayer_sandbox_thread``."""
    from loyaltylayer import LoyaltyLayer

    client_id, client_secret = _demo_credentials(loyaltylayer_sandbox_thread.config)
    with LoyaltyLayer(client_id, client_secret, loyaltylayer_sandbox_thread.base_url) as client:
        yield client
