"""Helpers for the command-line tests: what a run printed and wrote, read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
