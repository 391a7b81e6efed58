"""What a figure is, how its goal is judged, and how the results are printed and saved.

A figure reports rows; a row compares a measurement with a baseline taken in the same run, so
the ratio means something on a shared, noisy machine where the absolute numbers do not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = ["PROFILES", "Goal", "Profile", "Row", "render_markdown", "unavailable", "write_json"]

Profile = Literal["smoke", "quick", "full"]
PROFILES: tuple[Profile, ...] = ("smoke", "quick", "full")


@attrs.frozen
class Goal:
    """``ratio <= 1.15``, ``measured == 0``...: the promise a row is judged against."""

    op: Literal["<=", ">=", "==", "<"]
    value: float
    of: Literal["ratio", "measured"] = "ratio"

    def met(self, row: Row) -> bool | None:
        actual = row.ratio if self.of == "ratio" else row.measured
        if actual is None or math.isnan(actual):
            return None
        checks: dict[str, Callable[[float, float], bool]] = {
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
            "==": lambda a, b: a == b,
            "<": lambda a, b: a < b,
        }
        return checks[self.op](actual, self.value)

    def __str__(self) -> str:
        subject = "ratio" if self.of == "ratio" else "measured"
        symbol = {"<=": "≤", ">=": "≥", "==": "=", "<": "<"}[self.op]
        return f"{subject} {symbol} {self.value:g}"


@attrs.frozen(kw_only=True)
class Row:
    """One line of the table. ``ratio`` is ``measured / baseline`` unless the figure says so."""

    figure: str
    measured: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    goal: Goal | None = None
    note: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "measured": self.measured,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "goal": None if self.goal is None else str(self.goal),
            "met": self.met,
            "note": self.note,
            "details": self.details,
        }


def unavailable(figure: str, reason: str) -> Row:
    """A figure that could not be measured says why, instead of showing a made-up number."""
    return Row(figure=figure, measured=None, note=f"unavailable: {reason}")


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if value == int(value) and abs(value) < 1e6:
        text = f"{int(value)}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def render_markdown(rows: Sequence[Row], *, title: str) -> str:
    """The table the README and ``results/latest.md`` show."""
    lines = [
        f"### {title}",
        "",
        "| figure | measured | baseline | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        baseline = _number(row.baseline, row.unit if row.baseline_label == "" else "")
        if row.baseline_label:
            baseline = (
                f"{baseline} ({row.baseline_label})"
                if row.baseline is not None
                else (row.baseline_label)
            )
        met = {True: "yes", False: "**NO**", None: "—"}[row.met]
        measured = _number(row.measured, row.unit)
        if row.note:
            measured = f"{measured}; {row.note}" if row.measured is not None else row.note
        ratio = "—" if row.ratio is None else f"{row.ratio:.3f}"
        goal = "—" if row.goal is None else str(row.goal)
        lines.append(f"| {row.figure} | {measured} | {baseline} | {ratio} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    """Enough about the machine to tell two result files apart."""
    import aiohttp

    from loyaltylayer import __version__

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "aiohttp": aiohttp.__version__,
        "loyaltylayer": __version__,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, rows: Sequence[Row], *, profile: Profile, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "profile": profile,
        "seconds": round(seconds, 1),
        "environment": environment(),
        "figures": [row.to_json() for row in rows],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
