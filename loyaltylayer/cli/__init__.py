"""The ``loyaltylayer`` command line (the ``cli`` extra: click and rich).

Only :func:`main` is public; it is the console script and ``python -m loyaltylayer``.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_EXTRA = frozenset({"click", "rich"})


def main() -> None:
    """Run the command line; without the ``cli`` extra, say how to install it."""
    try:
        from ._app import cli
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _EXTRA:
            raise
        sys.stderr.write(
            "The loyaltylayer command line needs click and rich: pip install 'loyaltylayer[cli]'\n"
        )
        raise SystemExit(3) from None
    cli(prog_name="loyaltylayer")
