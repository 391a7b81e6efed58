"""Tracebacks that show local variables show no secret: real failures of a token fetch, a
tokenize, a create and a CLI input row, formatted as ``pytest --showlocals`` and Sentry do
(``traceback.TracebackException(..., capture_locals=True)``) and as rich's ``show_locals``.

Every frame counts, aiohttp's included (a failed exchange chains aiohttp's error), and every
value in them: dicts of headers and bodies, attrs objects, long strings rich shortens.
"""

from __future__ import annotations

import io
import json
import re
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.traceback import Traceback
from sdk_env import holder

import loyaltylayer as ll
from loyaltylayer.cli._input import InputFile
from loyaltylayer.sandbox import Fault, Sandbox, SandboxConfig

pytestmark = pytest.mark.looptime

PAN = "5555555555554444"
CVV = "9876"
SECRET = "s3cr3t-CANARY-7f3a"


def rendered(error: BaseException) -> str:
    """``error``'s traceback with every frame's locals, as the standard library and rich show
    it (rich with no limit on string length, and with its default of 80 characters)."""
    plain = traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True
    )
    texts = ["".join(plain.format())]
    for max_string in (None, 80):
        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(
            Traceback.from_exception(
                type(error),
                error,
                error.__traceback__,
                show_locals=True,
                locals_max_string=max_string,
                locals_max_length=None,
            )
        )
        texts.append(console.file.getvalue())  # type: ignore[attr-defined]
    return "\n".join(texts)


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (PAN, SECRET, *secrets):
        assert secret not in text
    # Four digits can occur inside random ids; standing alone they would be the CVV.
    assert re.search(rf"(?<![\w.]){CVV}(?![\w.])", text) is None
    assert "eyJ" not in text  # no JWE (its header always starts so)


@pytest.fixture
async def sandbox() -> Iterator[Sandbox]:
    async with Sandbox(SandboxConfig(clients={"canary": SECRET}, seed=3)) as running:
        yield running  # type: ignore[misc]


def _client(sandbox: Sandbox) -> ll.AsyncLoyaltyLayer:
    return ll.AsyncLoyaltyLayer("canary", SECRET, sandbox.base_url, max_retries=0)


def _card() -> ll.Card:
    return ll.Card(number=PAN, expiry="11/38", name="GRACE HOPPER", cvv=CVV)


async def test_a_failed_token_fetch(sandbox: Sandbox) -> None:
    for fault in ("reset", "status"):
        sandbox.clear_faults()
        sandbox.add_fault(Fault(route="/auth/token", kind=fault, status=500))
        async with _client(sandbox) as client:
            with pytest.raises(ll.APIError) as excinfo:
                await client.passes.status("pss_1")
        text = rendered(excinfo.value)
        assert "_fetch_token" in text  # the frames that held the secret are shown
        assert_no_secret(text)


async def test_a_failed_tokenize(sandbox: Sandbox) -> None:
    async with _client(sandbox) as client:
        await client.cards.encryption_keys()
        access_token = client._transport._auth.current()
        assert access_token is not None
        for fault in ("reset", "status"):
            sandbox.clear_faults()
            sandbox.add_fault(Fault(route="/v1/card/tokenize", kind=fault, status=502))
            with pytest.raises(ll.APIError) as excinfo:
                await client.cards.tokenize(_card(), plan_id="pp-gold")
            text = rendered(excinfo.value)
            assert "_tokenize_once" in text
            assert "'***'" in text
            assert_no_secret(text, str(access_token))


async def test_a_failed_create(sandbox: Sandbox) -> None:
    async with _client(sandbox) as client:
        token = await client.cards.tokenize(_card(), plan_id="pp-gold")
        access_token = client._transport._auth.current()
        assert access_token is not None
        for fault in ("reset", "status"):
            sandbox.clear_faults()
            sandbox.add_fault(Fault(route="/v1/pass/create", kind=fault, status=502))
            with pytest.raises(ll.APIError) as excinfo:
                await client.passes.create(
                    plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
                )
            text = rendered(excinfo.value)
            assert "enrol_token" in text
            assert_no_secret(text, str(access_token), str(token.enrol_token))


ROW = {
    "card_number": PAN,
    "card_expiry": "11/38",
    "name_on_card": "GRACE HOPPER",
    "cvv": CVV,
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
}


def _input_files(directory: Path) -> list[Path]:
    csv_file = directory / "cardholders.csv"
    csv_file.write_text(",".join(ROW) + "\n" + ",".join(ROW.values()) + "\n")
    jsonl_file = directory / "cardholders.jsonl"
    jsonl_file.write_text(json.dumps({"card_number": PAN, "cvv": CVV, "email": "x"}) + "\n")
    return [csv_file, jsonl_file]


class JobCrashed(Exception):
    """What a bug in the code consuming the rows would raise."""


async def test_a_crash_while_a_cli_row_is_read(tmp_path: Path) -> None:
    """A crash where a row is in hand: raised into the CLI's row readers at the row (as a
    cancelled or failing job does to the generator that feeds it)."""
    for path in _input_files(tmp_path):
        source = InputFile.open(path, {})
        for rows in (source.rows(), source._raw_rows()):
            row = next(rows)
            assert row.values  # the row, with its card, is what the frames hold
            with pytest.raises(JobCrashed) as excinfo:
                rows.throw(JobCrashed("the job crashed"))
            text = rendered(excinfo.value)
            assert "_rows" in text or "rows" in text
            assert "'***'" in text
            assert_no_secret(text)
