"""Run the benchmarks and print the table: ``python benchmarks/run.py [--quick|--smoke]``.

``--quick`` takes under a minute, the default full run a few minutes, ``--smoke`` seconds (tiny
sizes, only proves the harness works). ``--only NAME`` runs one figure; ``--json PATH`` chooses
where the figures go (default ``benchmarks/results/latest.json``, with ``latest.md`` beside it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import ``benchmarks`` as the package it is, and let no module of it
    # shadow a standard one by name.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import logging

from benchmarks._harness import Profile, Row, render_markdown, unavailable, write_json

FIGURES = {
    "budget": "benchmarks.budget",
    "overhead": "benchmarks.overhead",
    "sync": "benchmarks.sync_facade",
    "memory": "benchmarks.memory",
    "token": "benchmarks.token_refresh",
    "encryption": "benchmarks.encryption",
    "import": "benchmarks.import_time",
    "redis": "benchmarks.redis_workers",
    "sharing": "benchmarks.sharing",
}
"""Figure name -> module with ``run(profile) -> list[Row]``, in table order."""

RESULTS = Path(__file__).resolve().parent / "results"


def _measure(name: str, profile: Profile) -> list[Row]:
    """One figure; a figure that fails reports why in the table instead of ending the run."""
    try:
        module = importlib.import_module(FIGURES[name])
        rows: list[Row] = module.run(profile)
    except Exception as error:
        traceback.print_exc()
        return [unavailable(name, f"{type(error).__name__}: {error}")]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="the quick set, under a minute")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness runs")
    parser.add_argument("--only", choices=sorted(FIGURES), action="append", help="repeatable")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="output file")
    args = parser.parse_args(argv)
    profile: Profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    names = [name for name in FIGURES if args.only is None or name in args.only]
    # The peer limiter's 429s are counted from the server's journal; one warning each is noise.
    logging.getLogger("loyaltylayer").setLevel(logging.ERROR)

    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        figure_started = time.perf_counter()
        rows += _measure(name, profile)
        print(f"{name}: {time.perf_counter() - figure_started:.1f} s", file=sys.stderr)
    seconds = time.perf_counter() - started

    table = render_markdown(rows, title=f"loyaltylayer benchmarks ({profile}, {seconds:.0f} s)")
    print(table)
    write_json(args.json, rows, profile=profile, seconds=seconds)
    args.json.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
