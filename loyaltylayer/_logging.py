"""The ``loyaltylayer`` logger: metadata only (method, path, status, ids, timings), never bodies.

``LOYALTYLAYER_LOG=debug`` or ``info`` attaches a stderr handler, so a user can see what the SDK
does without touching their logging setup.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("loyaltylayer")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def configure_from_env() -> None:
    level = _LEVELS.get(os.environ.get("LOYALTYLAYER_LOG", "").strip().lower())
    if level is None or any(getattr(h, "_loyaltylayer", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._loyaltylayer = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
