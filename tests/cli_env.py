"""Helpers for the command-line tests: an input file to enroll, and what a run printed and wrote."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

FIELDS = ("card_number", "card_expiry", "name_on_card", "cvv", "first_name", "last_name", "email")


def write_input(path: Path, count: int, *, invalid_every: int = 0) -> Path:
    """``count`` cardholders ``R00000``...; with ``invalid_every``, every n-th fails Luhn."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow((*FIELDS, "reference"))
        for n in range(count):
            invalid = invalid_every and n % invalid_every == invalid_every - 1
            writer.writerow(
                (
                    "4111111111111112" if invalid else "4111111111111111",
                    "12/29",
                    "ADA LOVELACE",
                    "123",
                    "Ada",
                    f"Lovelace{n}",
                    f"ada{n}@example.com",
                    f"R{n:05d}",
                )
            )
    return path


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
