"""Enrolling from plain synchronous code (a cron job, a Django view): no ``await`` anywhere.

``LoyaltyLayer`` has the same methods as the async client; it runs them on a background event
loop, so it is safe from any thread. Run it against the local sandbox::

    python examples/legacy_sync.py --sandbox

Without ``--sandbox`` it reads LOYALTYLAYER_CLIENT_ID, _CLIENT_SECRET and _BASE_URL.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.resources
from importlib.resources.abc import Traversable

import loyaltylayer as ll
from loyaltylayer.sandbox import SandboxConfig, SandboxThread

# The demo file that ships with the package (`loyaltylayer demo --save-input FILE` copies it).
CARDHOLDERS = importlib.resources.files("loyaltylayer.sandbox") / "demo_cardholders.csv"


def enroll_file(client: ll.LoyaltyLayer, path: Traversable, plan_id: str) -> None:
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for outcome in client.enroll(rows, plan_id=plan_id):
        if outcome.status == "created" and outcome.pass_ is not None:
            print(f"{outcome.key}: {outcome.pass_.pass_id} ({outcome.card})")
        else:
            print(f"{outcome.key}: {outcome.status}: {outcome.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", action="store_true", help="use an embedded sandbox")
    parser.add_argument("--plan-id", default="pp-gold")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.sandbox:
            sandbox = stack.enter_context(SandboxThread(SandboxConfig()))
            client = ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox.base_url)
        else:
            client = ll.LoyaltyLayer.from_env()
        stack.enter_context(client)
        first = client.passes.create(
            plan_id="esim-5gb",
            holder=ll.Holder(first_name="Ada", last_name="Lovelace", email="ada@example.com"),
        )
        print(f"one eSIM pass: {first.pass_id}, status {first.status}")
        enroll_file(client, CARDHOLDERS, args.plan_id)


if __name__ == "__main__":
    main()
