"""The benchmark harness runs end to end with tiny sizes and writes its table and JSON.

Only that it works is checked here: the figures themselves are measurements, judged in the
table, never timed assertions in the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)  # about 45 s on an idle machine: a hang guard, not a speed goal
def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["profile"] == "smoke"
    figures = {row["figure"].split()[0] for row in data["figures"]}
    assert figures >= {"1", "2", "3", "4", "5", "6", "7", "8", "9"}, result.stderr[-4000:]
    broken = [
        row["figure"]
        for row in data["figures"]
        if row["note"].startswith("unavailable") and "redis-server" not in row["note"]
    ]
    assert not broken, result.stderr[-4000:]
    assert "| figure | measured | baseline | ratio | goal | met? |" in result.stdout
    assert out.with_suffix(".md").read_text() in result.stdout
