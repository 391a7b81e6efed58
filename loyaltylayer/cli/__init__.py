"""The ``loyaltylayer`` command line (the ``cli`` extra: click and rich).

Only :func:`main` is public; it is the console script and ``python -m loyaltylayer``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]

_EXTRA = frozenset({"click", "rich"})


def _install_hint() -> str:
    """How to add the ``cli`` extra: to the checkout an editable install runs from, or by name."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "loyaltylayer").is_dir():
        return f"pip install -e '.[cli]' (in {checkout})"
    return "pip install 'loyaltylayer[cli]'"


def main() -> None:
    """Run the command line; without the ``cli`` extra, say how to install it."""
    try:
        from ._app import cli
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _EXTRA:
            raise
        sys.stderr.write(f"The loyaltylayer command line needs click and rich: {_install_hint()}\n")
        raise SystemExit(3) from None
    cli(prog_name="loyaltylayer")
