"""Canary: a known PAN, CVV, client secret and access token never reach a log, repr or error."""

from __future__ import annotations

import logging
import re

import pytest
from sdk_env import holder

import loyaltylayer as ll
from loyaltylayer.sandbox import Fault, Sandbox, SandboxConfig

pytestmark = pytest.mark.looptime

PAN = "5555555555554444"
CVV = "9876"
SECRET = "s3cr3t-CANARY-7f3a"


async def test_no_secret_in_logs_reprs_errors_or_journal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = SandboxConfig(clients={"canary": SECRET})
    texts: list[str] = []
    async with Sandbox(config) as sandbox:
        sandbox.add_fault(Fault(route="/v1/pass/create", kind="status", status=502, times=1))
        sandbox.add_fault(Fault(route="/v1/card/tokenize", kind="reset", times=1))
        async with ll.AsyncLoyaltyLayer("canary", SECRET, sandbox.base_url) as client:
            card = ll.Card(number=PAN, expiry="11/38", name="GRACE HOPPER", cvv=CVV)
            token = await client.cards.tokenize(card, plan_id="pp-gold")
            created = await client.passes.create(
                plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
            )
            errors: list[BaseException] = []
            for call in (
                lambda: client.passes.status("pss_missing"),
                lambda: client.passes.create(
                    plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
                ),
            ):
                try:
                    await call()
                except ll.LoyaltyLayerError as error:
                    errors.append(error)
            try:
                ll.Card(number=PAN[:-1] + "5", expiry="11/38", name="X", cvv=CVV + "1")
            except ll.ValidationError as error:
                errors.append(error)
            access_token = client._transport._auth._token
            assert access_token is not None
            outcomes = [
                o
                async for o in client.enroll(
                    [
                        {
                            "card_number": PAN,
                            "card_expiry": "11/38",
                            "name_on_card": "G",
                            "cvv": CVV,
                            "first_name": "G",
                            "last_name": "H",
                            "email": "g@example.com",
                        },
                        {"card_number": PAN[:-1] + "0", "cvv": CVV},
                    ],
                    plan_id="pp-gold",
                )
            ]
            texts += [repr(client), repr(client._transport), repr(client._transport._auth)]
            texts += [repr(card), str(card), repr(token), repr(created)]
            texts += [repr(o) for o in outcomes] + [str(o.error) for o in outcomes]
            texts += [repr(e) for e in errors] + [str(e) for e in errors]
        texts.append(repr(sandbox.journal()))
        texts.append(repr(config))
    texts.append(caplog.text)
    texts += [str(record.args) for record in caplog.records]
    everything = "\n".join(texts)
    assert "DEBUG" in caplog.text
    assert "/v1/pass/create -> 200" in caplog.text
    for canary in (PAN, SECRET, access_token, token.enrol_token):
        assert canary not in everything
    # Four digits can occur inside random ids and timestamps; standing alone they would be the CVV.
    assert re.search(rf"(?<![\w.]){CVV}(?![\w.])", everything) is None
    assert "eyJ" not in everything  # no JWE (its header always starts so)
