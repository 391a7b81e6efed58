"""How the job touches files it writes: private to the user, never over an operator's file.

Every file the CLI writes holds personal data (``errors.csv``: names, emails, phones) or live
credentials (``results.jsonl``: enrol tokens), so each is created ``0600`` and any copy of it
keeps that mode.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import IO

__all__ = ["free_name", "open_private", "same_file", "set_aside", "write_error"]

_PRIVATE = 0o600
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def open_private(path: Path, *, append: bool, errors: str = "strict") -> IO[str]:
    """``path`` opened for writing UTF-8 text as only its owner may read it.

    ``append`` never truncates (the results file); otherwise the file is rewritten (the
    errors file, an output of each run). An existing file loses any group or other access.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, _PRIVATE)
    try:
        os.fchmod(descriptor, _PRIVATE)
        return open(descriptor, "w", encoding="utf-8", errors=errors, newline="")
    except BaseException:
        os.close(descriptor)
        raise


def same_file(first: Path, second: Path) -> bool:
    """The two paths name one file (by inode when both exist, else by their resolved paths)."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


def free_name(path: Path, tag: str) -> Path:
    """A name beside ``path`` that no file has: ``<stem>.<tag>[.N]<suffix>``.

    Characters of ``tag`` that do not belong in a file name become ``_``.
    """
    tag = _UNSAFE.sub("_", tag)
    candidate = path.with_name(f"{path.stem}.{tag}{path.suffix}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}.{tag}.{number}{path.suffix}")
    return candidate


def set_aside(path: Path, kept_as: Path) -> None:
    """Keep ``path`` whole under the name ``kept_as`` (which no file has), private."""
    if kept_as.exists():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(kept_as))
    path.rename(kept_as)
    kept_as.chmod(_PRIVATE)


def write_error(path: Path, error: OSError) -> OSError:
    """The error of a failed write, naming the file (a write's own error names none)."""
    return OSError(error.errno, error.strerror, str(path))
