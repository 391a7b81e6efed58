"""``import loyaltylayer`` loads only what every client needs (benchmark figure 8).

joserfc and cryptography load on the first card encryption; redis, the CLI and the sandbox
only when asked for. Each check runs a fresh interpreter, since this test process has long
imported all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import json, sys
    import loyaltylayer as ll
    loaded = sorted(sys.modules)
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
    "loyaltylayer.cli",
    "loyaltylayer.contrib",
    "loyaltylayer.sandbox",
]


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RSA-OAEP-256"})


@pytest.fixture(scope="module")
def probe(key: RSAKey) -> dict[str, Any]:
    """A fresh interpreter: the modules ``import loyaltylayer`` loaded, then a first encryption."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(key.as_dict(private=False))],
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("package", NOT_AT_IMPORT)
def test_import_loyaltylayer_does_not_load(probe: dict[str, Any], package: str) -> None:
    loaded = [m for m in probe["loaded"] if m == package or m.startswith(package + ".")]
    assert loaded == [], f"import loyaltylayer loaded {loaded}"


def test_first_encryption_loads_joserfc_and_decrypts(probe: dict[str, Any], key: RSAKey) -> None:
    message = jwe.decrypt_compact(probe["token"], key, algorithms=["RSA-OAEP-256", "A256GCM"])
    assert message.protected["kid"] == "k1"
    assert json.loads(message.plaintext or b"")["CardNumber"] == "4111111111111111"
