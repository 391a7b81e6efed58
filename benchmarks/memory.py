"""Figure 5: peak memory of the CLI enrolling a small file and a ten-times larger one.

The CLI runs as a subprocess against a sandbox subprocess with no rate limit (and a rate far
above what it can reach, so pacing never holds records back). Its peak RSS comes from the
kernel when it exits (``wait4``), so nothing samples it and nothing is missed. Flat memory means
the larger file peaks no higher than the smaller one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._harness import Goal, Profile, Row
from ._records import write_csv
from ._servers import CLIENT_ID, CLIENT_SECRET, PLAN_ID, SandboxProcess

__all__ = ["run"]

SIZES: dict[Profile, tuple[int, int]] = {
    "smoke": (200, 400),
    "quick": (1_000, 10_000),
    "full": (10_000, 100_000),
}
_LIMIT_MB = 150


def _enroll(base_url: str, workdir: Path, records: int) -> tuple[float, float, int]:
    """Peak RSS (MB), wall seconds and exit code of one CLI run over ``records`` rows."""
    source = write_csv(workdir / f"cardholders-{records}.csv", records)
    env = os.environ | {
        "LOYALTYLAYER_CLIENT_ID": CLIENT_ID,
        "LOYALTYLAYER_CLIENT_SECRET": CLIENT_SECRET,
    }
    # fmt: off
    args = [
        sys.executable, "-m", "loyaltylayer", "enroll", str(source), "--plan-id", PLAN_ID,
        "--base-url", base_url, "--rate", "1000000", "--per", "1",
        "--out", str(workdir / f"results-{records}.jsonl"),
        "--errors", str(workdir / f"errors-{records}.csv"),
    ]
    # fmt: on
    started = time.perf_counter()
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - started, process.returncode


def run(profile: Profile) -> list[Row]:
    small, large = SIZES[profile]
    with (
        tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp,
        SandboxProcess.run(rate_key="off", extra=["--idempotency-ttl", "60"]) as sandbox,
    ):
        small_mb, small_s, small_rc = _enroll(sandbox.base_url, Path(tmp), small)
        sandbox.reset()
        large_mb, large_s, large_rc = _enroll(sandbox.base_url, Path(tmp), large)
    details = {
        "records": [small, large],
        "peak_rss_mb": [round(small_mb, 1), round(large_mb, 1)],
        "wall_s": [round(small_s, 1), round(large_s, 1)],
        "records_per_s": [round(small / small_s), round(large / large_s)],
        "exit_codes": [small_rc, large_rc],
    }
    note = "" if small_rc == large_rc == 0 else f"CLI exit codes {small_rc}, {large_rc}"
    return [
        Row(
            figure=f"5 memory: CLI peak RSS, {large:,} ÷ {small:,} records",
            measured=large_mb,
            unit="MB",
            baseline=small_mb,
            baseline_label=f"{small:,} records",
            ratio=large_mb / small_mb,
            goal=Goal("<=", 1.10),
            note=note,
            details=details,
        ),
        Row(
            figure=f"5 memory: CLI peak RSS, {large:,} records",
            measured=large_mb,
            unit="MB",
            goal=Goal("<", _LIMIT_MB, of="measured"),
            note=f"{large / large_s:,.0f} records/s, {large_s:.0f} s",
        ),
    ]
