"""``python -m loyaltylayer.sandbox``: serve a sandbox until Ctrl-C or SIGTERM."""

import sys

from ._cli import main

sys.exit(main())
