"""``loyaltylayer report``: one summary of the results files of a job's shards (or of one run).

Each file is read as a rerun would read it (every row checked, a malformed one named by its
line); the last row of each record decides where it stands. The files must belong to one plan
and one API. A record found in two files was enrolled by two shards: that is reported, since
it may have two passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exit import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ._progress import Tally
from ._results import INVALID_RECORD, JobInfo, ResultsError, ResultsFile, record_rows
from ._summary import created_and_failed

__all__ = ["report_command"]


@attrs.define(kw_only=True)
class _Record:
    status: str
    file: Path
    retryable: bool = False
    invalid: bool = False
    replayed: bool = False


def _record(row: dict[str, Any], path: Path) -> _Record:
    error = row.get("error")
    error = error if isinstance(error, dict) else {}
    return _Record(
        status=str(row["status"]),
        file=path,
        retryable=error.get("retryable") is True,
        invalid=error.get("code") == INVALID_RECORD,
        replayed=row.get("replayed") is True,
    )


def _merge(paths: tuple[Path, ...]) -> tuple[list[JobInfo], dict[str, _Record], list[str]]:
    jobs: list[JobInfo] = []
    records: dict[str, _Record] = {}
    twice: list[str] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace", newline="") as stream:
            job = JobInfo.from_row(path, ResultsFile.first_row(path, stream.readline()))
            mine = {str(row["key"]): _record(row, path) for row, _ in record_rows(path, stream)}
        if jobs and (job.plan_id, job.environment) != (jobs[0].plan_id, jobs[0].environment):
            raise ResultsError(
                f"{path} belongs to another job (plan {job.plan_id!r} at {job.environment!r}, "
                f"not plan {jobs[0].plan_id!r} at {jobs[0].environment!r})"
            )
        jobs.append(job)
        for key, record in mine.items():
            if key in records:
                twice.append(key)
            records[key] = record
    return jobs, records, twice


def _tally(records: dict[str, _Record]) -> Tally:
    tally = Tally(total=len(records))
    for record in records.values():
        if record.status == "created":
            tally.created += 1
            tally.replayed += record.replayed
        elif record.status == "created_earlier":
            tally.created_earlier += 1
        elif record.status == "failed":
            tally.failed += 1
            tally.retryable += record.retryable
            tally.invalid += record.invalid
    return tally


@click.command("report")
@click.argument(
    "results",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
def report_command(results: tuple[Path, ...]) -> None:
    """One summary of the results files of a job run in shards (enroll --shard I/N):

        loyaltylayer report results.shard-*.jsonl

    Exit codes: 0 every record created, 1 some failed or were not finished, 2 a file that
    cannot be read, or files of different jobs, or a record enrolled by two shards.
    """
    console = Console(highlight=False)
    try:
        jobs, records, twice = _merge(results)
    except ResultsError as error:
        raise click.BadParameter(str(error), param_hint="RESULTS") from None
    except OSError as error:
        raise click.BadParameter(f"cannot read {error.filename}: {error.strerror}") from None
    tally = _tally(records)
    table = Table(title="Enrollment report", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Files", Text(str(len(results))))
    table.add_row("Plan", Text(jobs[0].plan_id))
    table.add_row("Jobs", Text(", ".join(sorted({job.job_id for job in jobs}))))
    table.add_row("Records", Text(str(tally.total)))
    created, failed = created_and_failed(tally)
    table.add_row("Created", Text(created))
    table.add_row("Created earlier", Text(str(tally.created_earlier)))
    table.add_row("Failed", Text(failed))
    table.add_row("Not finished", Text(str(tally.total - tally.done)))
    console.print(table, markup=False, highlight=False)
    if twice:
        console.print(
            f"Error: {len(twice)} records are in more than one file (e.g. {twice[0]!r}): "
            "they were enrolled by two shards and may have two passes each.",
            markup=False,
            highlight=False,
            style="bold red",
        )
        raise SystemExit(EXIT_USAGE)
    raise SystemExit(EXIT_FAILED if tally.failed or tally.total > tally.done else EXIT_OK)
