"""Fixtures for the sandbox tests (the plugin's, imported because the package is not installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sandbox_api import Api

from loyaltylayer.sandbox import Sandbox, SandboxConfig
from loyaltylayer.sandbox.pytest_plugin import (  # noqa: F401 - fixtures, without the entry point
    loyaltylayer_sandbox,
    loyaltylayer_sandbox_config,
    loyaltylayer_sandbox_thread,
)


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:  # noqa: F811 - the tests' default: no limit
    return SandboxConfig(rate_key="off", seed=7)


@pytest.fixture
async def api(loyaltylayer_sandbox: Sandbox) -> AsyncIterator[Api]:  # noqa: F811
    async with aiohttp.ClientSession() as session:
        yield Api(session, loyaltylayer_sandbox)
