"""``python -m loyaltylayer``: the command line."""

from .cli import main

main()
