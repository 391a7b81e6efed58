"""Figure 7: card encryptions per second on one core, against joserfc encrypting the same bytes.

The SDK's ``encrypt_card`` is joserfc plus validation and JSON; the baseline is joserfc alone
with the same key, header and plaintext, so the ratio is what the SDK adds. The two run in
many short paired rounds (``_harness.paired_rounds``), as figures 3 and 4 do: the best of three
long runs, baseline always first, read 0.60 to 0.92 for the same code on a busy machine, and 20
rounds of 0.3 s gave a confidence interval of 0.76–0.88.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from joserfc import jwe
from joserfc.jwk import RSAKey

from loyaltylayer import Card, encrypt_card

from ._harness import Paired, Profile, Row, paired_rounds

__all__ = ["run"]

ROUNDS: dict[Profile, tuple[float, int]] = {
    "smoke": (0.02, 2),
    "quick": (0.05, 20),
    "full": (0.05, 120),
}
"""Seconds each side encrypts in a round, and paired rounds, per profile."""


def _rate(encrypt: Callable[[], object], seconds: float) -> float:
    """Encryptions per second over about ``seconds``."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        encrypt()
        count += 1
    return count / elapsed


def run(profile: Profile) -> list[Row]:
    seconds, rounds = ROUNDS[profile]
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
    rates = Paired.of(
        paired_rounds(
            rounds,
            baseline=lambda: _rate(
                lambda: jwe.encrypt_compact(header, plaintext, public, algorithms=algorithms),
                seconds,
            ),
            measured=lambda: _rate(lambda: encrypt_card(card, public), seconds),
        ),
        float,
    )
    raw, sdk = rates.median_round
    return [
        Row(
            figure=f"7 card encryption (JWE RSA-OAEP-256 + A256GCM), one core"
            f" (median of {rounds} paired rounds)",
            measured=sdk,
            unit="/s",
            baseline=raw,
            baseline_label="joserfc alone",
            ratio=rates.ratio,
            details={
                "seconds_per_side_per_round": seconds,
                "rounds": rounds,
                **rates.details(),
                "sdk_us_each": round(1e6 / sdk, 1),
                "joserfc_us_each": round(1e6 / raw, 1),
            },
        )
    ]
