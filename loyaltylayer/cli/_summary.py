"""The table a job ends with, and the command that resumes it."""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._progress import Tally

__all__ = ["created_and_failed", "print_summary"]


def created_and_failed(tally: Tally) -> tuple[str, str]:
    """The "Created" and "Failed" cells: the counts, and what is in them."""
    created = str(tally.created)
    if tally.replayed:
        created += f" ({tally.replayed} replayed from an earlier run)"
    failed = str(tally.failed)
    if tally.failed:
        failed += f" ({tally.retryable} retryable, {tally.invalid} invalid rows)"
    return created, failed


def print_summary(
    console: Console,
    tally: Tally,
    *,
    job_id: str,
    requests: int,
    seconds: float,
    results: str,
    errors: str,
    stopped: str | None,
    resume: str | None,
) -> None:
    """Counts, files and, when something is left to do, the exact command that does it."""
    table = Table(title="Enrollment summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Job", Text(job_id))
    table.add_row("Records", Text(str(tally.total)))
    created, failed = created_and_failed(tally)
    table.add_row("Created", Text(created))
    table.add_row("Created earlier", Text(str(tally.created_earlier)))
    table.add_row("Already done", Text(str(tally.skipped)))
    table.add_row("Failed", Text(failed))
    table.add_row("Not started", Text(str(tally.total - tally.done)))
    table.add_row("Requests sent", Text(str(requests)))
    table.add_row("Time", Text(str(dt.timedelta(seconds=round(seconds)))))
    table.add_row("Results", Text(results))
    table.add_row("Errors", Text(errors))
    console.print(table, markup=False, highlight=False)
    if stopped is not None:
        console.print(f"Stopped: {stopped}.", markup=False, highlight=False)
    if resume is not None:
        console.print("Resume with:", markup=False, highlight=False)
        console.print(f"  {resume}", markup=False, highlight=False, soft_wrap=True)
