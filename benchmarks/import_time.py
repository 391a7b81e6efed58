"""Figure 8: how long ``import loyaltylayer`` takes, against ``import aiohttp`` (its floor).

Each import runs in a fresh interpreter, alternating, best of several: the first import of a
module is what a CLI or a cold web worker pays.
"""

from __future__ import annotations

import subprocess
import sys

from ._harness import Profile, Row

__all__ = ["run"]

ROUNDS: dict[Profile, int] = {"smoke": 2, "quick": 3, "full": 9}

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _import_seconds(module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out)


def run(profile: Profile) -> list[Row]:
    ours: list[float] = []
    floor: list[float] = []
    for _ in range(ROUNDS[profile]):
        ours.append(_import_seconds("loyaltylayer"))
        floor.append(_import_seconds("aiohttp"))
    return [
        Row(
            figure="8 import time",
            measured=min(ours) * 1000,
            unit="ms",
            baseline=min(floor) * 1000,
            baseline_label="import aiohttp",
            ratio=min(ours) / min(floor),
            details={"rounds": ROUNDS[profile]},
        )
    ]
