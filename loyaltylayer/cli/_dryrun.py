"""``enroll --dry-run``: check the whole file and show what a run would send, sending nothing."""

from __future__ import annotations

from rich.console import Console

from .._ratelimit import RateLimit
from ._budget import RequestPlan, budget_eta, format_duration
from ._input import InputFile
from ._results import ResultsFile, describe_errors

__all__ = ["print_dry_run"]

_SHOWN_ERRORS = 100


def print_dry_run(
    console: Console, source: InputFile, results: ResultsFile, *, total: int, rate: RateLimit
) -> int:
    """Print the counts, the bad rows, the request plan and its ETA; returns the bad rows."""

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    invalid = done = resent = 0
    for row in source.rows():
        progress = results.progress_of(row.key) if row.record is not None else None
        if row.record is None:
            invalid += 1
            if invalid <= _SHOWN_ERRORS:
                say(f"line {row.line}: {describe_errors(row.errors)}")
        elif progress is not None and progress.step == "done":
            done += 1
        elif progress is not None and progress.step == "send":
            resent += 1
    if invalid > _SHOWN_ERRORS:
        say(f"... and {invalid - _SHOWN_ERRORS} more invalid rows")
    new = total - invalid - done - resent
    plan = RequestPlan.for_records(new, resent=resent)
    say(f"Dry run of {source.path} ({source.format}): nothing was sent.")
    say(f"  records: {total}, valid: {total - invalid}, invalid: {invalid}")
    if results.resumed:
        say(
            f"  from {results.path}: {done} already done, {resent} creates to send again, {new} new"
        )
    say(
        f"  request plan: {plan.tokenize} tokenize + {plan.batches} batch-create + "
        f"{plan.setup} token/keys = {plan.total} requests"
    )
    say(
        f"  ETA at {rate.requests} requests per {rate.per:g} s: "
        f"{format_duration(budget_eta(plan.total, rate))} (without retries)"
    )
    return invalid
