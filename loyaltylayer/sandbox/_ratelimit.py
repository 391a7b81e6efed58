"""The server side of the rate limit: N requests per window per key, then a block.

Every request counts, including the ones refused during a block, exactly as the guide describes
the real service; the fixed window resets on multiples of the window on the sandbox clock (the
"each minute" of the guide), the sliding one counts the last ``window`` seconds.

Another service on the same IP can be emulated: ``background`` requests per window, evenly
spread, counted against one key as if they had come in (they are counted when the next real
request arrives, each at its own time). Optionally every answer carries the standard rate-limit
headers, which the guide does not promise.
"""

from __future__ import annotations

import collections
import math

__all__ = ["RateLimiter"]


class RateLimiter:
    """Decides, per key, whether a request is answered or gets 429 (and for how long)."""

    __slots__ = (
        "_background",
        "_background_key",
        "_block",
        "_blocked_until",
        "_fixed",
        "_headers",
        "_limit",
        "_next_background",
        "_recent",
        "_refused",
        "_sent",
        "_window",
        "_windows",
    )

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        kind: str,
        block: float,
        background: int = 0,
        background_key: str = "ip:127.0.0.1",
        headers: bool = False,
    ) -> None:
        self._limit = limit
        self._window = window
        self._block = block
        self._fixed = kind == "fixed"
        self._headers = headers
        self._windows: dict[str, tuple[int, int]] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._background = background
        self._background_key = background_key
        self._next_background: float | None = None
        self._sent = 0
        self._refused = 0

    def hit(self, key: str, now: float) -> float:
        """Count one request; the seconds of block left (0.0 means answer it)."""
        self._catch_up(now)
        return self._count(key, now)

    def _count(self, key: str, now: float) -> float:
        over = self._count_fixed(key, now) if self._fixed else self._count_sliding(key, now)
        until = self._blocked_until.get(key, 0.0)
        if until > now:
            return until - now
        if over:
            self._blocked_until[key] = now + self._block
            return self._block
        return 0.0

    def set_background(self, requests: int, now: float) -> None:
        """From ``now`` on, the other service sends ``requests`` per window (0: none)."""
        self._catch_up(now)
        self._background = requests
        self._next_background = now if requests else None

    def background(self, now: float) -> dict[str, object]:
        """The other service's rate, and how many of its requests were sent and refused by
        ``now``."""
        self._catch_up(now)
        return {
            "requests": self._background,
            "key": self._background_key,
            "sent": self._sent,
            "refused": self._refused,
        }

    def _catch_up(self, now: float) -> None:
        """Count the other service's requests due by ``now``, each at its own time."""
        if not self._background:
            return
        interval = self._window / self._background
        if self._next_background is None:
            self._next_background = now
        # Only the last window and block can still matter: skip what lies before them.
        horizon = now - self._window - self._block
        if self._next_background < horizon:
            skipped = math.floor((horizon - self._next_background) / interval)
            self._next_background += skipped * interval
        while self._next_background <= now:
            self._sent += 1
            if self._count(self._background_key, self._next_background) > 0:
                self._refused += 1
            self._next_background += interval

    def headers(self, key: str, now: float) -> dict[str, str]:
        """``RateLimit-Limit``/``-Remaining``/``-Reset`` for ``key`` (none unless enabled)."""
        if not self._headers:
            return {}
        blocked = self._blocked_until.get(key, 0.0) - now
        if blocked > 0:
            remaining, reset = 0, blocked
        elif self._fixed:
            index = math.floor(now / self._window)
            current, count = self._windows.get(key, (index, 0))
            remaining = self._limit - (count if current == index else 0)
            reset = (index + 1) * self._window - now
        else:
            stamps = [t for t in self._recent.get(key, ()) if t > now - self._window]
            remaining = self._limit - len(stamps)
            reset = stamps[0] + self._window - now if stamps else 0.0
        return {
            "RateLimit-Limit": str(self._limit),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(math.ceil(reset)),
        }

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
