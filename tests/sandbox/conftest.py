"""Fixtures for the sandbox tests, on top of the installed pytest plugin's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sandbox_api import Api

from loyaltylayer.sandbox import Sandbox, SandboxConfig


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:
    """The sandbox tests' default: no rate limit, fixed seed."""
    return SandboxConfig(rate_key="off", seed=7)


@pytest.fixture
async def api(loyaltylayer_sandbox: Sandbox) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, loyaltylayer_sandbox)
