"""``loyaltylayer enroll``: a file of cardholders in, one pass each, resumable.

The records stream from the file into ``client.enroll()`` with the results file as its
checkpoint: the engine records each step there before it goes on, and the command writes the
failures to ``errors.csv`` as they come. Stopping is done by no longer feeding records: the
engine then finishes what it has in flight, so a first Ctrl-C (or ``--max-errors``) loses
nothing and leaves nothing half-sent. The engine is told how many records the file holds, so it
reads none ahead: what it has in flight is about ``--concurrency`` records. An error that is
no record's (a file that cannot be written) stops the job at once, with exit code 4: what was
recorded makes the rerun safe. So does a rate limiter that fails (the Redis of ``--redis-url``
gone), once what is in flight has failed with it.

A job is known by its id, kept in the results file: a rerun resumes it wherever the input has
moved. Starting over (``--restart``) keeps the old results file under another name and asks
first, since the records the old job created get a second pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import click
from rich.console import Console

from .._async._client import AsyncLoyaltyLayer
from .._cardmath import mask_card
from .._enroll_models import EnrollOutcome, EnrollRecord
from .._errors import AuthenticationError, EnrollmentError, LoyaltyLayerError
from .._ratelimit import RateLimit
from ._connect import (
    SANDBOX_ENVIRONMENT,
    Target,
    check_credentials,
    connect,
    private_key_option,
)
from ._dryrun import print_dry_run
from ._errors_file import ErrorsFile, replaceable
from ._exit import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JobStopped,
    UsageProblem,
)
from ._files import is_regular_or_absent, same_file
from ._input import CheckedRow, InputError, InputFile, parse_mapping
from ._network_options import network_options
from ._progress import JobProgress, Tally
from ._results import ResultsError, ResultsFile, describe_error, describe_errors
from ._shard import Shard, parse_shard
from ._summary import print_summary

__all__ = ["enroll_command"]

_TICK = 0.25


@attrs.frozen(kw_only=True)
class _Options:
    plan_id: str
    concurrency: int
    max_errors: int | None
    resume: str


class _FileJob:
    """One run of ``enroll`` over a file: feeds the engine, reports outcomes, stops when asked."""

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
        self.failure: str | None = None
        """Why the job stopped on an error that is no record's, found in a record's outcome."""

    def stop(self, reason: str) -> None:
        """Feed no more records; what is in flight still finishes."""
        if self.stopped is None:
            self.stopped = reason

    def _open_files(self) -> None:
        source = self._source
        try:
            self._results.open(line_of=lambda index: self._in_flight[index][0])
            self._errors = ErrorsFile(
                self._errors_path,
                source.echoed_columns,
                card=source.by_field["card_number"],
                cvv=source.by_field["cvv"],
            )
        except OSError as error:
            self._results.close()
            raise JobStopped(_cannot_write(error)) from None
        if self._errors.kept_as is not None:
            self._console.print(
                f"The errors file of an earlier run is kept as {self._errors.kept_as}.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def _note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.note(message)

    async def run(self, target: Target) -> int:
        started = time.monotonic()
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
                                total=self._tally.total,
                            )
                        )
                    )
                    with self._interrupts(worker):
                        await self._watch(worker, client, progress)
                    failure = self.failure
                    try:
                        await worker
                    except asyncio.CancelledError:
                        pass
                    except EnrollmentError as error:
                        failure = _stop_reason(error)
                    except OSError as error:
                        failure = _cannot_write(error)
            finally:
                self._results.close()
                self._errors.close()
                requests = client.attempts
        left = self._tally.total - self._tally.done
        resume = self._options.resume if left or self._tally.retryable or failure else None
        print_summary(
            self._console,
            self._tally,
            job_id=self._results.job.job_id,
            requests=requests,
            seconds=time.monotonic() - started,
            results=str(self._results.path),
            errors=f"{self._errors.path} ({self._errors.rows} rows)",
            stopped=self.stopped,
            resume=resume,
        )
        if failure is not None:
            raise JobStopped(failure)
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.refused:
            return EXIT_CONFIG
        return EXIT_FAILED if self._tally.failed or left else EXIT_OK

    async def _watch(
        self, worker: asyncio.Task[None], client: AsyncLoyaltyLayer, progress: JobProgress
    ) -> None:
        """Show the progress until the job ends."""
        while not worker.done():
            blocked_for = 0.0
            if self.failure is None:
                try:
                    blocked_for = await client.limiter.blocked_for()
                except LoyaltyLayerError as error:  # its Redis is gone
                    self._limiter_failed(error)
            progress.refresh(attempts=client.attempts, blocked_for=blocked_for)
            await asyncio.wait({worker}, timeout=_TICK)
        progress.refresh(attempts=client.attempts, blocked_for=0.0)

    def _limiter_failed(self, error: LoyaltyLayerError) -> None:
        """No request can go out: stop as on a file that cannot be written (exit 4)."""
        if self.failure is None:
            self.failure = str(error)
            self.stop("the rate limiter failed")

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
        # client.enroll() is an async generator: closing it when a write fails stops the job
        # at once, instead of leaving it running behind files already closed.
        assert isinstance(outcomes, AsyncGenerator)
        async with contextlib.aclosing(outcomes):
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
        """Count an outcome and report a failure (the engine put it in the results file)."""
        line, masked = self._in_flight.pop(outcome.index)
        if outcome.status == "skipped":
            self._tally.skipped += 1
            return
        if outcome.status == "created":
            self._tally.created += 1
            self._tally.replayed += outcome.replayed
            return
        if outcome.status == "created_earlier":
            self._tally.created_earlier += 1
            return
        assert outcome.error is not None
        self._errors.write(line=line, reason=describe_error(outcome.error), masked=masked)
        self._tally.retryable += outcome.retryable
        if isinstance(outcome.error, AuthenticationError) and not self.refused:
            self.refused = True
            self.stop("the API refused the credentials")
            self._note(f"Error: {describe_error(outcome.error)}")
        if _redis_unavailable(outcome.error):
            self._limiter_failed(outcome.error)
        self._failed()

    def _failed(self) -> None:
        self._tally.failed += 1
        limit = self._options.max_errors
        if limit is not None and self._tally.failed >= limit:
            self.stop(f"{self._tally.failed} records failed (--max-errors {limit})")


def _redis_unavailable(error: LoyaltyLayerError) -> bool:
    """The Redis of ``--redis-url`` cannot be reached: every request fails as this one did.

    Its error class is looked up where it lives, loaded only when a Redis limiter was made.
    """
    module = sys.modules.get("loyaltylayer.contrib._redis_connection")
    return module is not None and isinstance(error, module.RedisUnavailableError)


def _cannot_write(error: OSError) -> str:
    return f"cannot write {error.filename}: {error.strerror}"


def _stop_reason(error: EnrollmentError) -> str:
    """One line on why the job stopped: the file that cannot be written, else the error."""
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.filename is not None:
        return _cannot_write(cause)
    return str(error)


_NOT_IN_RESUME = frozenset({"dry_run", "restart", "yes", "redis_url", "proxy"})
"""Options the resume command leaves out: one-time choices, and URLs that may hold a password
(a rerun reads them from the environment again)."""


def _resume_command(ctx: click.Context, **effective: object) -> str:
    """The command that resumes this run, from click's own parameters and their values.

    ``effective`` overrides what the run worked out itself (the job id, the errors file).
    """
    argv = ["loyaltylayer", ctx.info_name or "enroll"]
    for param in ctx.command.params:
        name = param.name
        if name is None or name in _NOT_IN_RESUME:
            continue
        value = effective.get(name, ctx.params.get(name))
        if not isinstance(param, click.Option):
            argv.append(str(value))
        elif value is None or value is False:
            continue
        elif param.is_flag:
            argv.append(param.opts[0])
        elif param.multiple:
            for item in value:  # type: ignore[attr-defined]
                argv += [param.opts[0], str(item)]
        else:
            argv += [param.opts[0], str(value)]
    return shlex.join(argv)


_RESULTS_FILE = Path("results.jsonl")
_ERRORS_FILE = Path("errors.csv")
_ERRORS_FILE_OF_ERRORS = Path("errors.retry.csv")


def _default_errors_path(input_path: Path, shard: Shard | None) -> Path:
    """``errors.csv``, unless that is the input (a fixed errors file fed back); a shard's own
    (``errors.shard-0-of-4.csv``)."""
    path = _ERRORS_FILE
    if shard is not None:
        path = shard.file_name(path)
    if same_file(path, input_path):
        return _ERRORS_FILE_OF_ERRORS if shard is None else shard.file_name(_ERRORS_FILE_OF_ERRORS)
    return path


def _check_shard(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _refuse_overwrites(input_path: Path, out: Path, errors_path: Path) -> None:
    """Nothing the job writes may be its input, nor both outputs one file, nor anything but a
    regular file; and the errors file takes over no file but an earlier errors file."""
    for option, path in (("--out", out), ("--errors", errors_path)):
        if same_file(path, input_path):
            raise UsageProblem(f"{option} {path} is the input file: give the output another name")
        if not is_regular_or_absent(path):
            raise UsageProblem(f"{option} {path} is not a regular file: give a file's path")
    if same_file(out, errors_path):
        raise UsageProblem(f"--out and --errors are the same file ({out})")
    if not replaceable(errors_path):
        raise UsageProblem(
            f"--errors {errors_path} is not an errors file of this command (its first line is "
            "not line,error,...): give another path, or move the file away"
        )


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def _check_job_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and _JOB_ID.fullmatch(value) is None:
        raise click.BadParameter(
            "must be 1 to 128 letters, digits and . _ : - (starting with a letter or digit)"
        )
    return value


def _say_what_happens_to_earlier_results(
    console: Console, results: ResultsFile, input_path: Path, *, dry_run: bool
) -> None:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True, style="yellow")

    if results.moved_from is not None:
        say(
            f"Warning: {input_path} is not the input job {results.job.job_id} started with "
            f"({results.moved_from}); resuming the job by its id, so the records it already "
            "created are skipped."
        )
    start_over = results.start_over
    if start_over is not None and start_over.reason == "sandbox":
        kept, starts = ("would be kept", "would start") if dry_run else ("is kept", "starts")
        say(
            f"{results.path} was written against an earlier embedded sandbox, whose passes "
            f"ended with it: it {kept} as {start_over.kept_as}, and job "
            f"{results.job.job_id} {starts} afresh."
        )


def _confirm_restart(console: Console, results: ResultsFile, *, yes: bool, dry_run: bool) -> None:
    """Starting over makes second passes: say so, and ask unless told yes."""
    start_over = results.start_over
    if start_over is None or start_over.reason != "restart":
        return
    what = (
        f"--restart keeps {results.path} as {start_over.kept_as} and starts job "
        f"{results.job.job_id}: the {start_over.created} records job "
        f"{start_over.earlier.job_id} created will get a second pass each"
    )
    if start_over.created == 0 or yes or dry_run:
        console.print(what + ".", markup=False, highlight=False, soft_wrap=True, style="yellow")
        return
    if not sys.stdin.isatty():
        raise UsageProblem(f"{what}; add --yes to go ahead")
    if not click.confirm(f"{what}. Make new passes?", default=False):
        raise UsageProblem(f"nothing was done; {results.path} is as it was")


@click.command("enroll")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plan-id", required=True, help="The plan every record is enrolled in.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    show_default="results.jsonl; with --shard I/N, results.shard-I-of-N.jsonl",
    help="Results file, appended per record: the job's checkpoint. A rerun resumes from it.",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    show_default="errors.csv, or errors.retry.csv when INPUT is errors.csv; per shard too",
    help="The failed rows (card masked, CVV removed), to fix and feed back as INPUT.",
)
@click.option(
    "--shard",
    metavar="I/N",
    callback=_check_shard,
    help="Process only the records whose key hashes to shard I of N (I from 0), so N "
    "processes or hosts split one input; each gets its own results and errors files.",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read FIELD from the input column COLUMN (repeatable).",
)
@click.option(
    "--job-id",
    metavar="ID",
    callback=_check_job_id,
    help="The job's id, which every create's idempotency key derives from. Give the same id "
    "to rerun a job whose results file was lost: records it created end as 'created earlier', "
    "never as second passes.  [default: the results file's; for a new file, one derived from "
    "the plan, the API and --out]",
)
@click.option("--dry-run", is_flag=True, help="Check the file and show the plan; send nothing.")
@click.option("--sandbox", is_flag=True, help="Run against an embedded local sandbox.")
@click.option("--base-url", metavar="URL", help="API base URL [env: LOYALTYLAYER_BASE_URL].")
@network_options
@private_key_option
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
@click.option(
    "--restart",
    is_flag=True,
    help="Start a new job: the results file is kept under another name, and the records the "
    "old job created get a SECOND PASS each. Asks first.",
)
@click.option("--yes", is_flag=True, help="Answer yes to the question --restart asks.")
def enroll_command(
    input_path: Path,
    plan_id: str,
    out: Path | None,
    errors_path: Path | None,
    shard: Shard | None,
    mappings: tuple[str, ...],
    job_id: str | None,
    dry_run: bool,
    sandbox: bool,
    base_url: str | None,
    network: dict[str, Any],
    private_key: Path | None,
    redis_url: str | None,
    rate: int,
    per: float,
    concurrency: int,
    max_errors: int | None,
    restart: bool,
    yes: bool,
) -> None:
    """Enroll every cardholder in INPUT (CSV with a header row, or JSON lines).

    Credentials come from LOYALTYLAYER_CLIENT_ID and LOYALTYLAYER_CLIENT_SECRET. Rerun the same
    command to resume: records already created are skipped, failed ones are tried again.

    Exit codes: 0 all done, 1 some records failed, 2 bad usage or input, 3 credentials or
    configuration, 4 the job stopped on an error (a file it cannot write, Redis gone),
    130 interrupted.
    """
    if sandbox and base_url is not None:
        raise click.UsageError("give --sandbox or --base-url, not both")
    out = out or (_RESULTS_FILE if shard is None else shard.file_name(_RESULTS_FILE))
    errors_path = errors_path or _default_errors_path(input_path, shard)
    _refuse_overwrites(input_path, out, errors_path)
    console = Console(highlight=False)
    try:
        source = attrs.evolve(InputFile.open(input_path, parse_mapping(mappings)), shard=shard)
        total = source.count()
    except InputError as error:
        raise click.BadParameter(str(error), param_hint="INPUT") from None
    if total == 0:
        where = input_path if shard is None else f"shard {shard} of {input_path}"
        raise click.BadParameter(f"{where} has a header but no records", param_hint="INPUT")
    target = Target(
        sandbox=sandbox,
        base_url=base_url,
        redis_url=redis_url,
        rate=RateLimit(requests=rate, per=per),
        network=network,
        private_key=private_key,
    )
    try:
        results = ResultsFile.load(
            out,
            plan_id=plan_id,
            input=str(input_path.resolve()),
            environment=target.environment,
            job_id=job_id,
            restart=restart,
            forgets=lambda environment: environment == SANDBOX_ENVIRONMENT,
        )
    except ResultsError as error:
        raise UsageProblem(str(error)) from None
    except OSError as error:
        raise UsageProblem(f"cannot read {out}: {error.strerror}") from None
    _say_what_happens_to_earlier_results(console, results, input_path, dry_run=dry_run)
    _confirm_restart(console, results, yes=yes, dry_run=dry_run)
    if dry_run:
        invalid = print_dry_run(console, source, results, total=total, rate=target.rate)
        raise SystemExit(EXIT_USAGE if invalid else EXIT_OK)
    options = _Options(
        plan_id=plan_id,
        concurrency=concurrency,
        max_errors=max_errors,
        resume=_resume_command(
            click.get_current_context(),
            job_id=results.job.job_id,
            out=out,
            errors_path=errors_path,
        ),
    )
    job = _FileJob(console, source, results, errors_path, Tally(total=total), options)
    try:
        code = asyncio.run(job.run(target))
    except KeyboardInterrupt:  # before the job's own handler took over, or after
        click.echo("Interrupted: rerun the same command to resume.", err=True)
        code = EXIT_INTERRUPTED
    raise SystemExit(code)
