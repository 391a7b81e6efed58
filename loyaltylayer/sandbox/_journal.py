"""A record of every API request, with nothing secret in it: tests count and inspect traffic."""

from __future__ import annotations

import collections
from typing import Any

import attrs

__all__ = ["Journal", "JournalEntry"]


@attrs.frozen(kw_only=True)
class JournalEntry:
    """One API request as the sandbox saw it.

    ``status`` is ``None`` when the connection was dropped before any answer was processed
    (a ``reset`` fault); a ``commit_then_drop`` entry keeps the status of the answer that was
    committed but never sent. ``item_keys`` lists a batch's per-item idempotency keys (``None``
    for an item without one). No PAN, CVV, JWE, client secret or access token is ever stored.
    """

    time: float
    method: str
    path: str
    status: int | None
    correlation_id: str
    idempotency_key: str | None
    item_keys: tuple[str | None, ...] | None
    client_id: str | None
    client_ip: str | None
    replayed: bool
    fault: str | None
    batch_size: int | None

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        if self.item_keys is not None:
            data["item_keys"] = list(self.item_keys)
        return data


class Journal:
    """The newest ``limit`` entries, oldest first (bounded, so benchmarks cannot exhaust memory)."""

    def __init__(self, limit: int) -> None:
        self._entries: collections.deque[JournalEntry] = collections.deque(maxlen=limit)

    def append(self, entry: JournalEntry) -> None:
        self._entries.append(entry)

    def entries(self) -> list[JournalEntry]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
