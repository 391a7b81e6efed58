"""``loyaltylayer demo``: the enrollment job on the packaged demo file, against a local sandbox.

It needs no credentials and no checkout: the demo cardholders ship inside the package. Three of
their rows are invalid on purpose, so the demo also shows how a job reports failures.
"""

from __future__ import annotations

import csv
import importlib.resources
import shutil
from importlib.resources.abc import Traversable
from pathlib import Path

import click
from rich.console import Console

from ._enroll import enroll_command
from ._exit import EXIT_FAILED, EXIT_OK, UsageProblem

__all__ = ["demo_command"]

DEMO_PLAN = "pp-gold"
DEMO_DIRECTORY = Path("loyaltylayer-demo")
INVALID_ON_PURPOSE = {
    "8": "a card number that fails the Luhn check",
    "19": "an expired card",
    "34": "an email address with no domain",
}
"""The demo rows that must fail, by line of the demo file, and why."""

_BANNER = (
    "LoyaltyLayer demo: the enrollment job on the {records} demo cardholders, into plan "
    f"{DEMO_PLAN}. {len(INVALID_ON_PURPOSE)} rows are invalid on purpose "
    f"({', '.join(INVALID_ON_PURPOSE.values())}), to show how a job reports failures."
)

_NEXT = f"""\
Next:
  loyaltylayer demo --save-input cardholders.csv        # a copy of the demo file, to edit
  loyaltylayer enroll cardholders.csv --plan-id {DEMO_PLAN} --dry-run   # check it; sends nothing
  export LOYALTYLAYER_CLIENT_ID=... LOYALTYLAYER_CLIENT_SECRET=... \\
         LOYALTYLAYER_BASE_URL=https://your-uat-host.example
  loyaltylayer enroll cardholders.csv --plan-id YOUR-PLAN  # the same job against your UAT
  (run the same command again to resume it: records already created are skipped)
"""


def _demo_file() -> Traversable:
    return importlib.resources.files("loyaltylayer.sandbox").joinpath("demo_cardholders.csv")


def _failed_lines(errors: Path) -> set[str]:
    with errors.open(newline="", encoding="utf-8") as stream:
        return {row["line"] for row in csv.DictReader(stream)}


@click.command("demo")
@click.option(
    "--save-input",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write a copy of the demo cardholders to FILE and stop (to edit and enroll yourself).",
)
@click.pass_context
def demo_command(ctx: click.Context, save_input: Path | None) -> None:
    """Enroll the demo cardholders against an embedded sandbox: no credentials needed.

    Writes loyaltylayer-demo/results.jsonl and loyaltylayer-demo/errors.csv, replacing those of
    an earlier demo (whose sandbox, and passes, are gone). Exits 0 when the demo went as
    designed: every valid row created, and only the rows that are invalid on purpose failed.
    """
    console = Console(highlight=False)
    if save_input is not None:
        if save_input.exists():
            raise UsageProblem(f"{save_input} exists; give another file name")
        with importlib.resources.as_file(_demo_file()) as source:
            shutil.copyfile(source, save_input)
        console.print(f"Wrote the demo cardholders to {save_input}.", markup=False)
        return
    DEMO_DIRECTORY.mkdir(exist_ok=True)
    results, errors = DEMO_DIRECTORY / "results.jsonl", DEMO_DIRECTORY / "errors.csv"
    for earlier in (results, errors):
        earlier.unlink(missing_ok=True)
    with importlib.resources.as_file(_demo_file()) as source:
        records = sum(1 for _ in source.open(encoding="utf-8")) - 1
        console.print(_BANNER.format(records=records), markup=False, highlight=False)
        try:
            ctx.invoke(
                enroll_command,
                input_path=source,
                plan_id=DEMO_PLAN,
                out=results,
                errors_path=errors,
                sandbox=True,
            )
        except SystemExit as ended:
            code = ended.code
        else:
            code = EXIT_OK
    if code != EXIT_FAILED or _failed_lines(errors) != set(INVALID_ON_PURPOSE):
        console.print("The demo did not go as designed: see the summary above.", markup=False)
        raise SystemExit(code)
    console.print(
        f"As designed: every valid row has a pass, and the {len(INVALID_ON_PURPOSE)} invalid rows "
        f"are in {errors} (card masked, CVV removed). A real job exits 1 when any record fails, "
        "as here; the demo exits 0 because these are the failures it was made to show.\n",
        markup=False,
        highlight=False,
    )
    console.print(_NEXT, markup=False, highlight=False, soft_wrap=True)
