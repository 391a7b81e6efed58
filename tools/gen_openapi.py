"""Write ``loyaltylayer/openapi.json`` from ``loyaltylayer/openapi.yaml``.

The YAML is the spec people edit; the JSON is the same document for the sandbox to serve at
``/openapi.json`` and print with ``--print-openapi``, so the base package never needs a YAML
parser at run time. This script needs PyYAML (in the ``test`` extra).

    python tools/gen_openapi.py            # (re)write loyaltylayer/openapi.json
    python tools/gen_openapi.py --check    # exit 1 with a diff if the JSON is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parent.parent / "loyaltylayer"
FIX_COMMAND = "python tools/gen_openapi.py"


def render(yaml_text: str) -> str:
    """The JSON text of a YAML spec: key order kept, two-space indent, UTF-8, final newline."""
    return json.dumps(yaml.safe_load(yaml_text), indent=2, ensure_ascii=False) + "\n"


def run(package: Path, *, check: bool) -> int:
    source = package / "openapi.yaml"
    target = package / "openapi.json"
    wanted = render(source.read_text(encoding="utf-8"))
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if current == wanted:
        return 0
    if check:
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=str(target),
            tofile=f"{target} (from {source.name})",
            n=1,
        )
        sys.stderr.writelines(list(diff)[:80])
        print(f"{target.name} is out of date; run: {FIX_COMMAND}", file=sys.stderr)
        return 1
    target.write_text(wanted, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    parser.add_argument("--package", type=Path, default=PACKAGE, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    return run(options.package, check=options.check)


if __name__ == "__main__":
    sys.exit(main())
