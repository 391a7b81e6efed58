"""Figure 8: how long ``import loyaltylayer`` takes, against ``import aiohttp`` (its floor).

Each import runs in a fresh interpreter, alternating, best of several: the first import of a
module is what a CLI or a cold web worker pays. Both packages are imported from bytecode, as
installed packages are: an untimed first import writes it for both into a private cache
(``PYTHONPYCACHEPREFIX``). Otherwise an editable checkout run with
``PYTHONDONTWRITEBYTECODE=1`` would compile this project's sources on every import, and be
compared with an aiohttp whose wheel came with its bytecode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping

from ._harness import Goal, Profile, Row

__all__ = ["run"]

ROUNDS: dict[Profile, int] = {"smoke": 2, "quick": 3, "full": 9}

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _import_seconds(module: str, env: Mapping[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return float(out)


def run(profile: Profile) -> list[Row]:
    ours: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory() as bytecode:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = bytecode
        for module in ("loyaltylayer", "aiohttp"):
            _import_seconds(module, env)  # writes the bytecode
        for _ in range(ROUNDS[profile]):
            ours.append(_import_seconds("loyaltylayer", env))
            floor.append(_import_seconds("aiohttp", env))
    return [
        Row(
            figure="8 import time",
            measured=min(ours) * 1000,
            unit="ms",
            baseline=min(floor) * 1000,
            baseline_label="import aiohttp",
            ratio=min(ours) / min(floor),
            goal=Goal("<=", 1.20),
            details={"rounds": ROUNDS[profile], "bytecode": True},
        )
    ]
