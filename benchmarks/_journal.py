"""Reading the sandbox's journal as the server saw the traffic: its clock, its counts.

The client's own stamps could hide a burst the server counted; the journal cannot.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["budget_used", "max_in_fixed_window", "max_in_window", "statuses", "times"]


def times(entries: Sequence[dict[str, Any]], *, answered_only: bool = False) -> list[float]:
    """Server receive times, sorted; ``answered_only`` drops the 429s (requests wasted)."""
    return sorted(e["time"] for e in entries if not answered_only or e["status"] != 429)


def statuses(entries: Sequence[dict[str, Any]], status: int) -> int:
    return sum(1 for e in entries if e["status"] == status)


def max_in_window(stamps: Sequence[float], window: float) -> int:
    """The most requests in any window ``[t, t + window)``: what a sliding server counts."""
    best = 0
    for i, start in enumerate(stamps):
        best = max(best, bisect.bisect_left(stamps, start + window, lo=i) - i)
    return best


def max_in_fixed_window(stamps: Sequence[float], window: float) -> int:
    """The most requests in one calendar window (multiples of ``window`` on the server clock)."""
    counts: dict[int, int] = {}
    for stamp in stamps:
        index = math.floor(stamp / window)
        counts[index] = counts.get(index, 0) + 1
    return max(counts.values(), default=0)


def budget_used(stamps: Sequence[float], limit: int, window: float) -> float | None:
    """Sustained requests per window ÷ limit, from the spacing of requests ``limit`` apart.

    No client can send request ``i + limit`` less than one window after request ``i`` without a
    sliding server seeing ``limit + 1`` in a window, so ``window / mean(t[i+limit] - t[i])`` is
    1.0 at perfect use of the budget. Unlike a count per window it does not depend on where the
    windows are cut, and the free burst at the start weighs no more than any other stretch.
    """
    gaps = [stamps[i + limit] - stamps[i] for i in range(len(stamps) - limit)]
    if not gaps:
        return None
    return window / (sum(gaps) / len(gaps))
