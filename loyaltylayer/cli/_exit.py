"""Exit codes, and the one exception a command raises to end with one of them.

The codes are part of the interface: scripts loop on them (``until loyaltylayer enroll ...``).
"""

from __future__ import annotations

from typing import IO, Any

import click

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "CliError",
    "ConfigurationProblem",
    "JobStopped",
    "UsageProblem",
]

EXIT_OK = 0
EXIT_FAILED = 1
"""Some records failed (or a remote call failed); everything else finished."""
EXIT_USAGE = 2
"""Bad options or unreadable input: nothing was sent."""
EXIT_CONFIG = 3
"""Missing or rejected credentials, or a configuration that cannot work."""
EXIT_STOPPED = 4
"""The job stopped on an error (a file it cannot write): what was done is saved; fix and rerun."""
EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """An error the user can act on: printed as ``Error: ...`` (no traceback), then exit.

    Raise the subclass that names the kind of problem; its class attribute ``exit_code`` is the
    documented exit code of that kind.
    """

    exit_code = EXIT_FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class UsageProblem(CliError):
    """Bad options or unreadable input: nothing was sent."""

    exit_code = EXIT_USAGE


class ConfigurationProblem(CliError):
    """Missing or rejected credentials, or a configuration that cannot work."""

    exit_code = EXIT_CONFIG


class JobStopped(CliError):
    """The job stopped on an error (a file it cannot write): what was done is saved."""

    exit_code = EXIT_STOPPED
