"""``import loyaltylayer`` loads only what every program needs (benchmark figure 8).

cattrs and the resources load with the first client, backoff with the first failed attempt,
the enrollment engine with the first ``enroll()``, joserfc and cryptography with the first card
encryption; the sync facade, redis, the CLI and the sandbox only when asked for. Each check
runs a fresh interpreter, since this test process has long imported all of them.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey
from sdk_env import fresh_interpreter

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    import loyaltylayer as ll

    async def enroll_nobody(client):
        return [outcome async for outcome in client.enroll([], plan_id="pp-gold")]

    loaded = {"import": sorted(sys.modules)}
    client = ll.AsyncLoyaltyLayer("id", "secret", "https://api.example.com", rate_limit=None)
    loaded["client"] = sorted(sys.modules)
    assert asyncio.run(enroll_nobody(client)) == []
    loaded["enroll"] = sorted(sys.modules)
    card = ll.Card(number="4111111111111111", expiry="12/39", name="ADA LOVELACE", cvv="123")
    token = ll.encrypt_card(card, json.loads(sys.argv[1]))
    print(json.dumps({"loaded": loaded, "token": token}))
    """
)

NOT_AT_IMPORT = [
    "joserfc",
    "cryptography",
    "redis",
    "click",
    "rich",
    "cattrs",
    "backoff",
    "loyaltylayer._convert",
    "loyaltylayer._async._resources",
    "loyaltylayer._async._enroll",
    "loyaltylayer._enroll_models",
    "loyaltylayer._sync",
    "loyaltylayer.cli",
    "loyaltylayer.contrib",
    "loyaltylayer.sandbox",
]
WITH_THE_CLIENT = ["cattrs", "loyaltylayer._convert", "loyaltylayer._async._resources"]
WITH_THE_FIRST_JOB = ["loyaltylayer._async._enroll", "loyaltylayer._enroll_models"]


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RSA-OAEP-256"})


@pytest.fixture(scope="module")
def probe(key: RSAKey) -> dict[str, Any]:
    """A fresh interpreter: the modules ``import loyaltylayer`` loaded, then a first encryption."""
    out: dict[str, Any] = fresh_interpreter(PROBE, json.dumps(key.as_dict(private=False)))
    return out


def _loaded(probe: dict[str, Any], stage: str, package: str) -> list[str]:
    return [m for m in probe["loaded"][stage] if m == package or m.startswith(package + ".")]


@pytest.mark.parametrize("package", NOT_AT_IMPORT)
def test_import_loyaltylayer_does_not_load(probe: dict[str, Any], package: str) -> None:
    loaded = _loaded(probe, "import", package)
    assert loaded == [], f"import loyaltylayer loaded {loaded}"


def test_a_client_loads_the_resources_and_cattrs_but_not_the_enrollment_engine(
    probe: dict[str, Any],
) -> None:
    assert all(_loaded(probe, "client", package) for package in WITH_THE_CLIENT)
    assert [_loaded(probe, "client", package) for package in WITH_THE_FIRST_JOB] == [[], []]


def test_the_first_enroll_loads_the_enrollment_engine(probe: dict[str, Any]) -> None:
    assert all(_loaded(probe, "enroll", package) for package in WITH_THE_FIRST_JOB)
    assert _loaded(probe, "enroll", "loyaltylayer._sync") == []


def test_first_encryption_loads_joserfc_and_decrypts(probe: dict[str, Any], key: RSAKey) -> None:
    message = jwe.decrypt_compact(probe["token"], key, algorithms=["RSA-OAEP-256", "A256GCM"])
    assert message.protected["kid"] == "k1"
    assert json.loads(message.plaintext or b"")["CardNumber"] == "4111111111111111"
