"""Figure 7: card encryptions per second on one core, against joserfc encrypting the same bytes.

The SDK's ``encrypt_card`` is joserfc plus validation and JSON; the baseline is joserfc alone
with the same key, header and plaintext, so the ratio is what the SDK adds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from joserfc import jwe
from joserfc.jwk import RSAKey

from loyaltylayer import Card, encrypt_card

from ._harness import Profile, Row

__all__ = ["run"]

SECONDS: dict[Profile, float] = {"smoke": 0.2, "quick": 0.3, "full": 3.0}
"""How long each side encrypts, per round; best of three rounds."""


def _rate(encrypt: Callable[[], object], seconds: float) -> float:
    best = 0.0
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            encrypt()
            count += 1
        best = max(best, count / elapsed)
    return best


def run(profile: Profile) -> list[Row]:
    seconds = SECONDS[profile]
    key = RSAKey.generate_key(2048, parameters={"alg": "RSA-OAEP-256", "use": "enc", "kid": "k1"})
    public = RSAKey.import_key(key.as_dict(private=False))
    card = Card(number="4111111111111111", expiry="12/39", name="ADA LOVELACE", cvv="123")
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "application/json", "kid": "k1"}
    plaintext = json.dumps(
        {
            "CardNumber": card.number,
            "CardExpiry": card.expiry,
            "NameOnCard": card.name,
            "Cvv": "123",
        },
        separators=(",", ":"),
    ).encode()
    algorithms = ["RSA-OAEP-256", "A256GCM"]
    raw = _rate(
        lambda: jwe.encrypt_compact(header, plaintext, public, algorithms=algorithms), seconds
    )
    sdk = _rate(lambda: encrypt_card(card, public), seconds)
    return [
        Row(
            figure="7 card encryption (JWE RSA-OAEP-256 + A256GCM), one core",
            measured=sdk,
            unit="/s",
            baseline=raw,
            baseline_label="joserfc alone",
            ratio=sdk / raw,
            details={"sdk_us_each": round(1e6 / sdk, 1), "joserfc_us_each": round(1e6 / raw, 1)},
        )
    ]
