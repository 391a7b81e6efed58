"""Shared test helpers: a sandbox on the test's own loop and a client pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import loyaltylayer as ll
from loyaltylayer.sandbox import JournalEntry, Sandbox, SandboxConfig

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
VISA = "4111111111111111"


def card(number: str = VISA, **overrides: Any) -> ll.Card:
    return ll.Card(
        **({"number": number, "expiry": "12/39", "name": "ADA LOVELACE", "cvv": "123"} | overrides)
    )


def holder(**overrides: Any) -> ll.Holder:
    return ll.Holder(
        **({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"} | overrides)
    )


def cardholder_rows(count: int, prefix: str = "R") -> list[dict[str, str]]:
    """``count`` valid rows for ``enroll``, referenced ``{prefix}0``, ``{prefix}1``..."""
    return [
        {
            "card_number": VISA,
            "card_expiry": "12/39",
            "name_on_card": "ADA LOVELACE",
            "cvv": "123",
            "first_name": "Ada",
            "last_name": f"Lovelace{n}",
            "email": f"ada{n}@example.com",
            "reference": f"{prefix}{n}",
        }
        for n in range(count)
    ]


def paths(journal: list[JournalEntry], path: str | None = None) -> list[JournalEntry]:
    return [entry for entry in journal if path is None or entry.path == path]


@asynccontextmanager
async def running(
    config: SandboxConfig | None = None, **client_options: Any
) -> AsyncIterator[tuple[Sandbox, ll.AsyncLoyaltyLayer]]:
    """A sandbox on the running loop (so virtual time covers both) and a client for it."""
    async with Sandbox(config or SandboxConfig(seed=1)) as sandbox:
        client = ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, sandbox.base_url, **client_options)
        async with client:
            yield sandbox, client


async def new_pass(client: ll.AsyncLoyaltyLayer, plan_id: str = "pp-gold") -> ll.Pass:
    token = await client.cards.tokenize(card(), plan_id=plan_id)
    return await client.passes.create(
        plan_id=plan_id, enrol_token=token.enrol_token, holder=holder()
    )


def fresh_interpreter(source: str, *args: str) -> Any:
    """What ``source``, run in a new interpreter with this checkout on its path, prints as JSON:
    for what a test process, which has imported everything long ago, cannot show."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", source, *args],
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)
