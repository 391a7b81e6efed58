"""How the job touches files it writes: private to the user, never over an operator's file.

Every file the CLI writes holds personal data (``errors.csv``: names, emails, phones) or live
credentials (``results.jsonl``: enrol tokens), so each is created ``0600``, and an existing one
the user owns (a results file appended to) loses group and other access. A file of another user
keeps its mode, and a path that is not a regular file (a device, a FIFO) is never written.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import IO

__all__ = [
    "append_private",
    "create_private",
    "free_name",
    "is_regular_or_absent",
    "not_a_regular_file",
    "same_file",
    "set_aside",
    "write_error",
]

_PRIVATE = 0o600
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def create_private(path: Path, *, errors: str = "strict") -> IO[str]:
    """``path``, a new file (never an existing one), opened for writing UTF-8 text, ``0600``."""
    return _text(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE), errors, made=True)


def append_private(path: Path) -> IO[str]:
    """``path`` opened for appending UTF-8 text: created ``0600``, or an existing regular file,
    never truncated, made private if the user owns it."""
    try:
        return create_private(path)
    except FileExistsError:
        pass
    # Without O_NONBLOCK, opening a FIFO would wait for a reader; it is refused instead.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise not_a_regular_file(path)
    if info.st_uid == os.geteuid() and info.st_mode & 0o077:
        os.fchmod(descriptor, stat.S_IMODE(info.st_mode) & 0o700)
    return _text(descriptor, "strict", made=False)


def _text(descriptor: int, errors: str, *, made: bool) -> IO[str]:
    try:
        if made:  # exactly 0600, whatever the umask
            os.fchmod(descriptor, _PRIVATE)
        return open(descriptor, "w", encoding="utf-8", errors=errors, newline="")
    except BaseException:
        os.close(descriptor)
        raise


def is_regular_or_absent(path: Path) -> bool:
    """Nothing is at ``path``, or a regular file (maybe through a symbolic link) is."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return True


def not_a_regular_file(path: Path) -> OSError:
    return OSError(errno.EINVAL, "not a regular file", str(path))


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
    """Keep ``path`` whole under the name ``kept_as`` (which no file has), made private if the
    user owns it: what the job wrote is not left readable under a name no run writes again."""
    if kept_as.exists():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(kept_as))
    path.rename(kept_as)
    info = kept_as.lstat()
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077:
        kept_as.chmod(stat.S_IMODE(info.st_mode) & 0o700)


def write_error(path: Path, error: OSError) -> OSError:
    """The error of a failed write, naming the file (a write's own error names none)."""
    return OSError(error.errno, error.strerror, str(path))
