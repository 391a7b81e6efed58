"""An enrollment job that keeps its checkpoint in SQLite, so any rerun resumes it safely.

The engine decides where each record stands (an ``EnrollProgress``); a checkpoint only keeps
the last one per record and hands it back. That is all a database table needs to do::

    python examples/sqlite_checkpoint.py progress.db --sandbox

With ``--sandbox`` it enrolls the demo file into an embedded sandbox, then runs the same job
again, as a rerun after a crash would: every record the first run created is skipped. Without
it, it reads LOYALTYLAYER_CLIENT_ID, _CLIENT_SECRET and _BASE_URL, and each run of the command
resumes the job from the database.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.resources
import json
import sqlite3
from collections import Counter
from pathlib import Path

import loyaltylayer as ll
from loyaltylayer.sandbox import Sandbox

# The demo file that ships with the package (`loyaltylayer demo --save-input FILE` copies it).
CARDHOLDERS = importlib.resources.files("loyaltylayer.sandbox") / "demo_cardholders.csv"


class SqliteCheckpoint(ll.EnrollCheckpoint):
    """Each record's progress, one row per key, committed before the engine goes on.

    The progress of a record that is done names its pass (``progress.pass_id``), so a rerun
    reports the pass of every record an earlier run created, even one whose outcome that run
    never handed out (its loop stopped early).

    ``sqlite3`` blocks the event loop for the moment a local write takes; a database across a
    network would use its asyncio driver in the same two methods.
    """

    def __init__(self, path: str | Path) -> None:
        # check_same_thread=False: the methods run on the event loop's thread, which is not the
        # thread that made the connection under the sync client (its loop has a thread of its
        # own). The job calls them one at a time, so the connection is never used at once by
        # two threads; do not use it elsewhere while a job runs.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # isolation_level=None: autocommit, so each write lasts once it returns.
        # Write-ahead log: each write survives a crash of this process without a disk sync.
        # (A power cut may lose the last few; then the rerun's creates find the server's
        # passes under the same keys, and those records end "created_earlier", not twice.)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS progress (key TEXT PRIMARY KEY, progress TEXT NOT NULL)"
        )

    async def recall(self, key: str) -> ll.EnrollProgress | None:
        row = self._db.execute("SELECT progress FROM progress WHERE key = ?", (key,)).fetchone()
        return None if row is None else ll.EnrollProgress.from_json(key, json.loads(row[0]))

    async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
        self._db.execute(
            "INSERT INTO progress (key, progress) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET progress = excluded.progress",
            (progress.key, json.dumps(progress.to_json())),
        )

    def close(self) -> None:
        self._db.close()


async def enroll_file(
    client: ll.AsyncLoyaltyLayer, checkpoint: ll.EnrollCheckpoint, job_id: str
) -> Counter[str]:
    """Enroll the demo file as job ``job_id``; how many records ended in each status."""
    with CARDHOLDERS.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    counts: Counter[str] = Counter()
    async for outcome in client.enroll(
        rows, plan_id="pp-gold", job_id=job_id, checkpoint=checkpoint
    ):
        counts[outcome.status] += 1
    return counts


def enroll_file_sync(
    client: ll.LoyaltyLayer, checkpoint: ll.EnrollCheckpoint, job_id: str
) -> dict[str, str | None]:
    """The same job with the synchronous client; each record's pass id, by key."""
    with CARDHOLDERS.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    outcomes = client.enroll(rows, plan_id="pp-gold", job_id=job_id, checkpoint=checkpoint)
    return {outcome.key: outcome.pass_id for outcome in outcomes}


def report(label: str, counts: Counter[str]) -> None:
    print(f"{label}: " + ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", help="the SQLite file that holds the job's progress")
    parser.add_argument("--sandbox", action="store_true", help="use an embedded sandbox")
    parser.add_argument("--job-id", default="demo-job")
    args = parser.parse_args()
    checkpoint = SqliteCheckpoint(args.database)
    try:
        if not args.sandbox:
            async with ll.AsyncLoyaltyLayer.from_env() as client:
                report("run", await enroll_file(client, checkpoint, args.job_id))
            return
        async with Sandbox() as sandbox:
            client = ll.AsyncLoyaltyLayer("sandbox-client", "sandbox-secret", sandbox.base_url)
            async with client:
                report("first run", await enroll_file(client, checkpoint, args.job_id))
                report("rerun", await enroll_file(client, checkpoint, args.job_id))
    finally:
        checkpoint.close()


if __name__ == "__main__":
    asyncio.run(main())
