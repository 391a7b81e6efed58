"""The live view of a job: a rich progress bar on a terminal, plain periodic lines otherwise.

The ETA comes from the rate-limit budget, not from rich's own speed estimate: throughput is
capped by the budget, and after a server block a recent-speed estimate swings wildly.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import time
from types import TracebackType

import attrs
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from .._ratelimit import RateLimit
from .._rules import MAX_BATCH
from ._budget import budget_per_second, format_duration

__all__ = ["JobProgress", "Tally"]

_RATE_WINDOW = 60.0


@attrs.define(kw_only=True)
class Tally:
    """What happened to the job's records so far."""

    total: int
    created: int = 0
    created_earlier: int = 0
    """Records whose pass the server says an earlier run of the job made (results were lost)."""
    skipped: int = 0
    failed: int = 0
    retryable: int = 0
    """Failures a rerun may fix (faults, timeouts); included in ``failed``."""
    invalid: int = 0
    """Rows that failed the local checks (no request sent); included in ``failed``."""
    replayed: int = 0
    """Created passes the server replayed: made by an earlier, interrupted run."""

    @property
    def done(self) -> int:
        return self.created + self.created_earlier + self.skipped + self.failed


class JobProgress:
    """Shows a :class:`Tally` as it changes; call :meth:`refresh` a few times a second."""

    def __init__(
        self, console: Console, tally: Tally, rate: RateLimit, *, plain_every: float = 5.0
    ) -> None:
        self._console = console
        self._tally = tally
        self._budget = budget_per_second(rate)
        self._plain_every = plain_every
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._last_plain = time.monotonic()
        self._was_blocked = False
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]enroll"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                console=console,
            )
            self._task = self._progress.add_task(
                "enroll", total=tally.total, counts="", rate="", eta=""
            )

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def note(self, message: str) -> None:
        """A message printed above the bar (or as a line of its own)."""
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    def requests_per_minute(self, attempts: int) -> float | None:
        now = time.monotonic()
        self._samples.append((now, attempts))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _RATE_WINDOW:
            self._samples.popleft()
        then, before = self._samples[0]
        if now - then < 1.0:
            return None
        return (attempts - before) / (now - then) * 60.0

    def eta(self, per_minute: float | None, blocked_for: float) -> float:
        """Seconds left: the remaining requests at the budget (or the observed rate if lower)."""
        left = self._tally.total - self._tally.done
        requests = left + math.ceil(left / MAX_BATCH)
        rate = self._budget
        if per_minute:
            rate = min(rate, per_minute / 60.0)
        return blocked_for + requests / rate

    def refresh(self, *, attempts: int, blocked_for: float) -> None:
        tally = self._tally
        per_minute = self.requests_per_minute(attempts)
        rate_text = f"{per_minute:.0f} req/min" if per_minute is not None else "… req/min"
        if blocked_for > 0:
            until = dt.datetime.now() + dt.timedelta(seconds=blocked_for)
            eta_text = f"paused until {until:%H:%M:%S}"
        else:
            eta_text = f"ETA {format_duration(self.eta(per_minute, blocked_for))}"
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                completed=tally.done,
                counts=f"[green]✓ {tally.done - tally.failed}[/] [red]✗ {tally.failed}[/]",
                rate=rate_text,
                eta=eta_text,
            )
            return
        now = time.monotonic()
        blocked = blocked_for > 0
        if (blocked and not self._was_blocked) or now - self._last_plain >= self._plain_every:
            self._last_plain = now
            self.note(
                f"enroll: {tally.done}/{tally.total} done, {tally.created} created, "
                f"{tally.created_earlier} created earlier, {tally.skipped} already done, "
                f"{tally.failed} failed, {rate_text}, {eta_text}"
            )
        self._was_blocked = blocked
