"""``loyaltylayer enroll``: a file of cardholders in, one pass each, resumable.

The records stream from the file into ``client.enroll()``; each outcome is written to
``results.jsonl`` (the checkpoint) as it comes, failures also to ``errors.csv``. Stopping is
done by no longer feeding records: the engine then finishes what it has in flight, so a first
Ctrl-C (or ``--max-errors``) loses nothing and leaves nothing half-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import attrs
import click
from rich.console import Console

from .._enroll_models import EnrollOutcome, EnrollRecord
from .._errors import AuthenticationError
from .._ratelimit import RateLimit
from ._connect import Target, check_credentials, connect
from ._dryrun import print_dry_run
from ._exit import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageProblem,
)
from ._input import CheckedRow, InputError, InputFile, parse_mapping
from ._progress import JobProgress, Tally
from ._results import (
    ErrorsFile,
    ResultsError,
    ResultsFile,
    describe_error,
    describe_errors,
    mask_card,
)
from ._summary import print_summary

__all__ = ["enroll_command"]

_TICK = 0.25


@attrs.frozen(kw_only=True)
class _Options:
    plan_id: str
    concurrency: int
    max_errors: int | None
    resume: str


class _Job:
    """One run of the job: feeds the engine, records its outcomes, stops when asked."""

    def __init__(
        self,
        console: Console,
        source: InputFile,
        results: ResultsFile,
        errors_path: Path,
        tally: Tally,
        options: _Options,
    ) -> None:
        self._console = console
        self._source = source
        self._results = results
        self._errors_path = errors_path
        self._errors: ErrorsFile
        self._tally = tally
        self._options = options
        self._in_flight: dict[int, tuple[int, dict[str, str]]] = {}
        self._progress: JobProgress | None = None
        self.stopped: str | None = None
        self.interrupted = False
        self.refused = False

    def stop(self, reason: str) -> None:
        """Feed no more records; what is in flight still finishes."""
        if self.stopped is None:
            self.stopped = reason

    def _open_files(self) -> None:
        source = self._source
        try:
            self._results.open()
            self._errors = ErrorsFile(
                self._errors_path,
                source.columns,
                card=source.by_field["card_number"],
                cvv=source.by_field["cvv"],
            )
        except OSError as error:
            self._results.close()
            raise UsageProblem(f"cannot write {error.filename}: {error.strerror}") from None

    def _note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.note(message)

    async def run(self, target: Target) -> int:
        started = time.monotonic()
        requests = 0
        async with connect(target, self._console) as connection:
            client = connection.client
            await check_credentials(client)
            self._open_files()
            try:
                with JobProgress(self._console, self._tally, target.rate) as progress:
                    self._progress = progress
                    worker = asyncio.create_task(
                        self._consume(
                            client.enroll(
                                self._feed(),
                                plan_id=self._options.plan_id,
                                job_id=self._results.job.job_id,
                                checkpoint=self._results,
                                concurrency=self._options.concurrency,
                            )
                        )
                    )
                    with self._interrupts(worker):
                        while not worker.done():
                            progress.refresh(
                                attempts=client.attempts,
                                blocked_for=await client.limiter.blocked_for(),
                            )
                            await asyncio.wait({worker}, timeout=_TICK)
                        progress.refresh(attempts=client.attempts, blocked_for=0.0)
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
            finally:
                self._results.close()
                self._errors.close()
                requests = client.attempts
        left = self._tally.total - self._tally.done
        resume = self._options.resume if left or self._tally.retryable else None
        print_summary(
            self._console,
            self._tally,
            requests=requests,
            seconds=time.monotonic() - started,
            results=str(self._results.path),
            errors=f"{self._errors.path} ({self._errors.rows} rows)",
            stopped=self.stopped,
            resume=resume,
        )
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.refused:
            return EXIT_CONFIG
        return EXIT_FAILED if self._tally.failed or left else EXIT_OK

    @contextlib.contextmanager
    def _interrupts(self, worker: asyncio.Task[None]) -> Iterator[None]:
        """First Ctrl-C: stop feeding and let in-flight records finish. Second: cancel them."""
        loop = asyncio.get_running_loop()

        def interrupted() -> None:
            if self.interrupted:
                self._note("Cancelling the records in flight.")
                worker.cancel()
                return
            self.interrupted = True
            self.stop("interrupted")
            self._note(
                "Interrupted: finishing the records in flight, then stopping "
                "(press Ctrl-C again to cancel them)."
            )

        try:
            loop.add_signal_handler(signal.SIGINT, interrupted)
        except (NotImplementedError, RuntimeError, ValueError):
            yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _feed(self) -> AsyncIterator[EnrollRecord]:
        index = 0
        for row in self._source.rows():
            if self.stopped is not None:
                return
            if row.record is None:
                self._invalid(row)
                await asyncio.sleep(0)
                continue
            self._in_flight[index] = (row.line, self._errors.mask(row.values))
            index += 1
            yield row.record

    async def _consume(self, outcomes: AsyncIterator[EnrollOutcome]) -> None:
        async for outcome in outcomes:
            self._record(outcome)

    def _invalid(self, row: CheckedRow) -> None:
        card_column = self._source.by_field["card_number"]
        number = row.values.get(card_column, "")
        self._results.write_invalid(
            key=row.key,
            line=row.line,
            card=mask_card(number) if number else None,
            errors=row.errors,
        )
        self._errors.write(
            line=row.line, reason=describe_errors(row.errors), masked=self._errors.mask(row.values)
        )
        self._tally.invalid += 1
        self._failed()

    def _record(self, outcome: EnrollOutcome) -> None:
        line, masked = self._in_flight.pop(outcome.index)
        if outcome.status == "skipped":
            self._tally.skipped += 1
            return
        self._results.write_outcome(outcome, line=line)
        if outcome.status == "created":
            self._tally.created += 1
            self._tally.replayed += outcome.replayed
            return
        assert outcome.error is not None
        self._errors.write(line=line, reason=describe_error(outcome.error), masked=masked)
        self._tally.retryable += outcome.retryable
        if isinstance(outcome.error, AuthenticationError) and not self.refused:
            self.refused = True
            self.stop("the API refused the credentials")
            self._note(f"Error: {describe_error(outcome.error)}")
        self._failed()

    def _failed(self) -> None:
        self._tally.failed += 1
        limit = self._options.max_errors
        if limit is not None and self._tally.failed >= limit:
            self.stop(f"{self._tally.failed} records failed (--max-errors {limit})")


def _resume_command(argv: Sequence[str]) -> str:
    return shlex.join(["loyaltylayer", "enroll", *argv])


@click.command("enroll")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plan-id", required=True, help="The plan every record is enrolled in.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results.jsonl"),
    show_default=True,
    help="Results file, appended per record; a rerun resumes from it.",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("errors.csv"),
    show_default=True,
    help="The failed rows (card masked, CVV removed), to fix and feed back.",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read FIELD from the input column COLUMN (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Check the file and show the plan; send nothing.")
@click.option("--sandbox", is_flag=True, help="Run against an embedded local sandbox.")
@click.option("--base-url", metavar="URL", help="API base URL [env: LOYALTYLAYER_BASE_URL].")
@click.option(
    "--redis-url",
    metavar="URL",
    envvar="LOYALTYLAYER_REDIS_URL",
    help="Share the rate limit through Redis [env: LOYALTYLAYER_REDIS_URL].",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Requests allowed per --per seconds.",
)
@click.option(
    "--per",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="The rate-limit window, in seconds.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Cards tokenized at once.",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=1),
    help="Stop feeding records after this many failures.",
)
@click.option("--restart", is_flag=True, help="Ignore the results file: start a new job.")
def enroll_command(
    input_path: Path,
    plan_id: str,
    out: Path,
    errors_path: Path,
    mappings: tuple[str, ...],
    dry_run: bool,
    sandbox: bool,
    base_url: str | None,
    redis_url: str | None,
    rate: int,
    per: float,
    concurrency: int,
    max_errors: int | None,
    restart: bool,
) -> None:
    """Enroll every cardholder in INPUT (CSV with a header row, or JSON lines).

    Credentials come from LOYALTYLAYER_CLIENT_ID and LOYALTYLAYER_CLIENT_SECRET. Rerun the same
    command to resume: records already created are skipped, failed ones are tried again.

    Exit codes: 0 all done, 1 some records failed, 2 bad usage or input, 3 credentials or
    configuration, 130 interrupted.
    """
    if sandbox and base_url is not None:
        raise click.UsageError("give --sandbox or --base-url, not both")
    console = Console(highlight=False)
    try:
        source = InputFile.open(input_path, parse_mapping(mappings))
        total = source.count()
    except InputError as error:
        raise click.BadParameter(str(error), param_hint="INPUT") from None
    if total == 0:
        raise click.BadParameter(f"{input_path} has a header but no records", param_hint="INPUT")
    target = Target(
        sandbox=sandbox,
        base_url=base_url,
        redis_url=redis_url,
        rate=RateLimit(requests=rate, per=per),
    )
    try:
        results = ResultsFile.load(
            out,
            plan_id=plan_id,
            input=str(input_path.resolve()),
            environment=target.environment,
            restart=restart,
        )
    except ResultsError as error:
        raise UsageProblem(str(error)) from None
    except OSError as error:
        raise UsageProblem(f"cannot read {out}: {error.strerror}") from None
    if dry_run:
        invalid = print_dry_run(console, source, results, total=total, rate=target.rate)
        raise SystemExit(EXIT_USAGE if invalid else EXIT_OK)
    argv = [str(input_path), "--plan-id", plan_id, "--out", str(out), "--errors", str(errors_path)]
    for mapping in mappings:
        argv += ["--map", mapping]
    if sandbox:
        argv.append("--sandbox")
    if base_url is not None:
        argv += ["--base-url", base_url]
    argv += ["--rate", str(rate), "--per", f"{per:g}", "--concurrency", str(concurrency)]
    if max_errors is not None:
        argv += ["--max-errors", str(max_errors)]
    options = _Options(
        plan_id=plan_id,
        concurrency=concurrency,
        max_errors=max_errors,
        resume=_resume_command(argv),
    )
    job = _Job(console, source, results, errors_path, Tally(total=total), options)
    raise SystemExit(asyncio.run(job.run(target)))
