"""``--shard I/N``: N processes or hosts split one input between them, each record to one.

A record goes to the shard its key hashes to (SHA-256, so it is the same on every machine, in
every run, whatever the order or the length of the file): a rerun of shard I processes the same
records, and no two shards ever make a pass for the same one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import attrs

__all__ = ["Shard", "parse_shard"]

_SHARD = re.compile(r"(\d{1,6})/(\d{1,6})")


@attrs.frozen(kw_only=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def holds(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def file_name(self, path: Path) -> Path:
        """``results.jsonl`` -> ``results.shard-0-of-4.jsonl``: each shard's own file."""
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> shard 2 of 4 (shards are numbered from 0, as a Kubernetes Indexed Job's
    ``JOB_COMPLETION_INDEX`` is); :class:`ValueError` says what is wrong."""
    match = _SHARD.fullmatch(text.strip())
    if match is None:
        raise ValueError("must be I/N: this shard's index (from 0) and the number of shards")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ValueError(f"the index must be 0 to N-1: {index} is not a shard of {count}")
    return Shard(index=index, count=count)
