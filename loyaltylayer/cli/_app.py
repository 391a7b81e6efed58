"""The ``loyaltylayer`` command group."""

from __future__ import annotations

import click

from .._version import __version__
from ._demo import demo_command
from ._enroll import enroll_command
from ._passes import pass_group
from ._report import report_command
from ._sandbox import sandbox_command
from ._token import token_command

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loyaltylayer")
def cli() -> None:
    """LoyaltyLayer from the command line: enroll cardholders in bulk, manage passes, and run a
    local sandbox.

    Credentials come from the environment: LOYALTYLAYER_CLIENT_ID, LOYALTYLAYER_CLIENT_SECRET
    and LOYALTYLAYER_BASE_URL. Try it with no credentials at all:

        loyaltylayer demo
    """


cli.add_command(demo_command)
cli.add_command(enroll_command)
cli.add_command(pass_group)
cli.add_command(report_command)
cli.add_command(token_command)
cli.add_command(sandbox_command)
