"""What a figure is, how its goal is judged, and how the results are printed and saved.

A figure reports rows; a row compares a measurement with a baseline taken in the same run, so
the ratio means something on a shared, noisy machine where the absolute numbers do not.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import platform
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

__all__ = [
    "PROFILES",
    "Goal",
    "Paired",
    "Profile",
    "Row",
    "paired_rounds",
    "render_markdown",
    "settle",
    "unavailable",
    "write_json",
]

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


T = TypeVar("T")


def settle() -> None:
    """Call just before a timed section starts, so every one starts from the same heap state.

    Collecting the garbage the previous section left (its event loop, session, replies) is the
    Python benchmark norm; timeit goes further and disables GC while timing. We keep GC enabled:
    the collections the SDK's own allocations cause are part of its cost.
    """
    gc.collect()


def paired_rounds(
    rounds: int, baseline: Callable[[], T], measured: Callable[[], T]
) -> list[tuple[T, T]]:
    """``(baseline, measured)`` of each round, the two run back to back in alternating order.

    Baseline first in even rounds, measured first in odd ones (ABBA): neither side always runs
    second, in the heap and on the machine the other left behind. Drift in the machine's load
    over the run hits both sides of a round alike, so each round's ratio is a fair comparison.
    """
    pairs: list[tuple[T, T]] = []
    for index in range(rounds):
        if index % 2 == 0:
            base = baseline()
            other = measured()
        else:
            other = measured()
            base = baseline()
        pairs.append((base, other))
    return pairs


_RESAMPLES = 2000


@attrs.frozen
class Paired:
    """One quantity over paired rounds; its ratio is the median of the per-round ratios."""

    baseline: tuple[float, ...]
    measured: tuple[float, ...]

    @classmethod
    def of(cls, pairs: Sequence[tuple[T, T]], value: Callable[[T], float]) -> Paired:
        return cls(tuple(value(b) for b, _ in pairs), tuple(value(m) for _, m in pairs))

    @property
    def ratios(self) -> list[float]:
        return [m / b for b, m in zip(self.baseline, self.measured, strict=True)]

    @property
    def median_round(self) -> tuple[float, float]:
        """``(baseline, measured)`` of the round whose ratio is the median (the lower of the
        middle two for an even count): shown in the row, its quotient is the figure's ratio."""
        ratios = self.ratios
        middle = ratios.index(statistics.median_low(ratios))
        return self.baseline[middle], self.measured[middle]

    @property
    def ratio(self) -> float:
        baseline, measured = self.median_round
        return measured / baseline

    @property
    def ratio_ci95(self) -> tuple[float, float]:
        """A 95% bootstrap confidence interval of the median ratio: how far another run of the
        same rounds on the same machine could plausibly land (seeded, so it is repeatable)."""
        ratios = self.ratios
        draw = random.Random(0).choices
        medians = sorted(statistics.median(draw(ratios, k=len(ratios))) for _ in range(_RESAMPLES))
        return medians[int(0.025 * _RESAMPLES)], medians[int(0.975 * _RESAMPLES) - 1]

    def details(self) -> dict[str, Any]:
        """The spread of the per-round ratios, and every round's values to check it against."""
        ratios = self.ratios
        low, high = self.ratio_ci95
        return {
            "ratio_ci95": [round(low, 3), round(high, 3)],
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
            "baseline_rounds": [float(f"{v:.4g}") for v in self.baseline],
            "measured_rounds": [float(f"{v:.4g}") for v in self.measured],
        }


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
        if "ratio_ci95" in row.details:
            low, high = row.details["ratio_ci95"]
            ratio = f"{ratio} (95% CI {low:.3f}–{high:.3f})"
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
