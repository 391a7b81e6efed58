"""A faithful, stateful local LoyaltyLayer API: the SDK's tests, demo and users' tests run on it.

Start one with ``python -m loyaltylayer.sandbox`` (``--help`` lists its settings) or in process::

    async with Sandbox(SandboxConfig()) as sb:
        ...  # point a client at sb.base_url

The names are loaded on first use, so the pytest plugin in this package (loaded in every pytest
run where the SDK is installed) costs nothing until a sandbox fixture is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clients import ClientRegistration
    from ._clock import Clock
    from ._config import Plan, SandboxConfig, load_config_file
    from ._faults import Fault
    from ._journal import JournalEntry
    from ._server import Sandbox, SandboxThread

__all__ = [
    "ClientRegistration",
    "Clock",
    "Fault",
    "JournalEntry",
    "Plan",
    "Sandbox",
    "SandboxConfig",
    "SandboxThread",
    "load_config_file",
]

_HOMES = {
    "ClientRegistration": "._clients",
    "Clock": "._clock",
    "Fault": "._faults",
    "JournalEntry": "._journal",
    "Plan": "._config",
    "Sandbox": "._server",
    "SandboxConfig": "._config",
    "SandboxThread": "._server",
    "load_config_file": "._config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
