"""``bury``: keep what a forked child inherited alive, unclosed and unfinalized, until it exits.

A child made by ``fork`` holds copies of its parent's objects: an aiohttp session, an event loop.
Their sockets and their epoll instance are shared with the parent, so closing or finalizing them
in the child (a session's finalizer closes its connections, which unregisters them from the
shared epoll instance) breaks the parent: its next request hangs. The child must keep them, and
use new ones of its own.

A module-level reference is not enough: module globals are cleared when the interpreter exits,
and the objects would be finalized then. The frame of a daemon thread is never unwound, neither
at exit nor, in a forked child, for the parent's threads (which do not exist there): so the
graveyard is held by a daemon thread that does nothing else, started by the first burial in each
process. Used by the transport (sessions) and the portal (its loop); it imports neither.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["bury"]

_graveyard: list[object] = []
_keeper_pid: int | None = None


def bury(inherited: object) -> None:
    """Keep ``inherited`` referenced, never closed or finalized, until this process ends."""
    global _keeper_pid
    _graveyard.append(inherited)
    if _keeper_pid != os.getpid():
        _keeper_pid = os.getpid()
        keeper = threading.Thread(
            target=_hold, args=(_graveyard,), name="loyaltylayer-graveyard", daemon=True
        )
        # Python 3.12.0-3.12.1 start no thread at exit: the list alone then holds the graveyard.
        with contextlib.suppress(RuntimeError):
            keeper.start()


def _hold(graveyard: list[object]) -> None:
    threading.Event().wait()
