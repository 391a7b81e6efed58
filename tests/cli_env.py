"""Helpers for the command-line tests: what a run printed and wrote, read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs


def summary(output: str) -> dict[str, str]:
    """The rows of the summary table a run ended with, by label."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        cells = line.split("│")
        if len(cells) == 4:
            rows[cells[1].strip()] = cells[2].strip()
    return rows


def results_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a results file that parses (a torn last line does not)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def last_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The last row of each record key: where each record stands."""
    return {row["key"]: row for row in results_rows(path) if "key" in row}


@attrs.frozen
class CliRun:
    """A finished ``loyaltylayer`` process: its exit code and everything it printed."""

    exit_code: int
    output: str


def run_cli(*args: str, cwd: Path, env: Mapping[str, str | None] | None = None) -> CliRun:
    """``python -m loyaltylayer ARGS`` as its own process, stderr after stdout in ``output``.

    ``env`` adds to (or, with ``None``, removes from) this process's environment.
    """
    environment = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "loyaltylayer", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return CliRun(exit_code=done.returncode, output=done.stdout + done.stderr)
