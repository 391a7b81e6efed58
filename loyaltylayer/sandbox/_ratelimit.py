"""The server side of the rate limit: N requests per window per key, then a block.

Every request counts, including the ones refused during a block, exactly as the guide describes
the real service; the fixed window resets on multiples of the window on the sandbox clock (the
"each minute" of the guide), the sliding one counts the last ``window`` seconds.
"""

from __future__ import annotations

import collections
import math

__all__ = ["RateLimiter"]


class RateLimiter:
    """Decides, per key, whether a request is answered or gets 429 (and for how long)."""

    __slots__ = ("_block", "_blocked_until", "_fixed", "_limit", "_recent", "_window", "_windows")

    def __init__(self, *, limit: int, window: float, kind: str, block: float) -> None:
        self._limit = limit
        self._window = window
        self._block = block
        self._fixed = kind == "fixed"
        self._windows: dict[str, tuple[int, int]] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def hit(self, key: str, now: float) -> float:
        """Count one request; the seconds of block left (0.0 means answer it)."""
        over = self._count_fixed(key, now) if self._fixed else self._count_sliding(key, now)
        until = self._blocked_until.get(key, 0.0)
        if until > now:
            return until - now
        if over:
            self._blocked_until[key] = now + self._block
            return self._block
        return 0.0

    def _count_fixed(self, key: str, now: float) -> bool:
        index = math.floor(now / self._window)
        current, count = self._windows.get(key, (index, 0))
        count = count + 1 if current == index else 1
        self._windows[key] = (index, count)
        return count > self._limit

    def _count_sliding(self, key: str, now: float) -> bool:
        # Only the newest limit+1 stamps decide whether the window holds more than limit.
        stamps = self._recent.get(key)
        if stamps is None:
            stamps = self._recent[key] = collections.deque(maxlen=self._limit + 1)
        stamps.append(now)
        return len(stamps) > self._limit and stamps[0] > now - self._window
