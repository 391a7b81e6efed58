"""Which record keys an input has shown so far, in a few bytes per key.

Duplicate detection has to remember every key of the input; a dict of strings costs about 136
bytes a key (14 MB per 100,000 rows) and made the job's memory grow with the file. This keeps a
64-bit digest and a position (a line of the CLI's file, an index of the engine's input) per key
in flat arrays (open addressing, at most half full): 24 to 48 bytes a key. Two different keys
share a digest with odds of about n²/2⁶⁵, a risk taken knowingly (a false "duplicate" names
the other position, so a person can check it).
"""

from __future__ import annotations

import hashlib
from array import array

__all__ = ["SeenKeys"]

_EMPTY = 0


def _digest(key: str) -> int:
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return value or 1


class SeenKeys:
    """A set of keys with the position each was first seen at."""

    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size < capacity * 2:
            size *= 2
        self._digests = array("Q", bytes(8 * size))
        self._positions = array("I", bytes(4 * size))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first_seen(self, key: str, position: int) -> int:
        """The position ``key`` was first seen at; records ``position`` when it is new."""
        digest = _digest(key)
        slot = self._find(digest)
        if self._digests[slot] == digest:
            return self._positions[slot]
        self._digests[slot] = digest
        self._positions[slot] = position
        self._count += 1
        if self._count * 2 > len(self._digests):
            self._grow()
        return position

    def _find(self, digest: int) -> int:
        mask = len(self._digests) - 1
        slot = digest & mask
        while True:
            found = self._digests[slot]
            if found in (_EMPTY, digest):
                return slot
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        digests, positions = self._digests, self._positions
        size = len(digests) * 2
        self._digests = array("Q", bytes(8 * size))
        self._positions = array("I", bytes(4 * size))
        for digest, position in zip(digests, positions, strict=True):
            if digest != _EMPTY:
                slot = self._find(digest)
                self._digests[slot] = digest
                self._positions[slot] = position
