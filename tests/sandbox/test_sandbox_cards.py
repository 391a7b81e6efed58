"""The JWK Set, real JWE decryption, card checks, key rotation and enrol tokens."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from sandbox_api import VISA, Api, encrypt, error_body, standing_clock

from loyaltylayer import _cardmath
from loyaltylayer.sandbox import Sandbox, SandboxConfig


def _card(**changes: str) -> dict[str, str]:
    return {**VISA, **changes}


async def test_jwks_lists_one_rsa_encryption_key(api: Api) -> None:
    jwks = await api.jwks()
    [key] = jwks["keys"]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e", "expires_at"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "enc", "RSA-OAEP-256", "AQAB")
    assert key["kid"].startswith("sbx-")
    assert len(key["n"]) >= 342  # 2048-bit modulus in base64url
    expires = dt.datetime.strptime(key["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert expires.timestamp() > api.sandbox.clock.now() + 29 * 86400


async def test_tokenize_returns_an_enrol_token(api: Api) -> None:
    reply = await api.tokenize()
    assert reply.status == 200
    assert set(reply.body) == {"enrol_token", "expires_at", "card_type", "card_last4"}
    assert reply.body["card_type"] == "VISA"
    assert reply.body["card_last4"] == "1111"
    expires = dt.datetime.strptime(reply.body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert expires.replace(tzinfo=dt.UTC).timestamp() == api.sandbox.clock.now() + 900


@pytest.mark.parametrize(
    ("card", "card_type", "last4"),
    [
        (_card(CardNumber="5555555555554444"), "MASTERCARD", "4444"),
        (_card(CardNumber="378282246310005", Cvv="1234"), "AMEX", "0005"),
        (_card(CardNumber="6011111111111117"), "DISCOVER", "1117"),
        (_card(CardNumber="3530111333300000"), "JCB", "0000"),
    ],
)
async def test_tokenize_accepts_each_network(
    api: Api, card: dict[str, str], card_type: str, last4: str
) -> None:
    reply = await api.tokenize(card, card_type=card_type)
    assert reply.status == 200, reply
    assert (reply.body["card_type"], reply.body["card_last4"]) == (card_type, last4)


@pytest.mark.parametrize(
    ("card", "description"),
    [
        (_card(CardNumber="4111111111111112"), "CardNumber fails the Luhn check."),
        (_card(CardNumber="41111111"), "CardNumber must be 12 to 19 digits."),
        (_card(CardNumber="4111 1111 1111 1111"), "CardNumber must be 12 to 19 digits."),
        (_card(CardExpiry="13/30"), "CardExpiry must be MM/YY."),
        (_card(CardExpiry="01/20"), "The card has expired."),
        (_card(Cvv="12"), "Cvv must be 3 or 4 digits."),
        (_card(Cvv="12a"), "Cvv must be 3 or 4 digits."),
        (_card(NameOnCard=" "), "NameOnCard is required."),
        ({"CardNumber": "4111111111111111"}, "CardExpiry must be MM/YY."),
        ([1, 2], "The card data must be an object with CardNumber, CardExpiry, Cvv."),
    ],
)
async def test_bad_cards_are_invalid_card(api: Api, card: Any, description: str) -> None:
    reply = await api.tokenize(card)
    assert reply.status == 400
    assert error_body(reply) == {
        "error": "invalid_card",
        "error_description": description,
        "code": 400,
    }


async def test_card_expiring_this_month_is_still_valid(api: Api) -> None:
    today = dt.datetime.fromtimestamp(api.sandbox.clock.now(), dt.UTC)
    reply = await api.tokenize(_card(CardExpiry=f"{today.month:02d}/{today.year % 100:02d}"))
    assert reply.status == 200


async def test_card_type_outside_the_list_or_not_matching(api: Api) -> None:
    reply = await api.tokenize(card_type="MAESTRO")
    assert error_body(reply) == {
        "error": "invalid_card_type",
        "error_description": "card_type must be one of " + ", ".join(_cardmath.CARD_TYPES) + ".",
        "code": 400,
    }
    reply = await api.tokenize(card_type="AMEX")
    assert error_body(reply) == {
        "error": "invalid_card_type",
        "error_description": "card_type does not match the card number.",
        "code": 400,
    }


async def test_unknown_plan_on_tokenize(api: Api) -> None:
    reply = await api.tokenize(plan_id="no-such-plan")
    assert error_body(reply) == {
        "error": "invalid_plan_id",
        "error_description": "Invalid plan ID",
        "code": 400,
    }


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {},
            {
                "encrypted_value": "is required",
                "plan_id": "is required",
                "card_type": "is required",
            },
        ),
        (
            {"encrypted_value": 1, "plan_id": "pp-gold", "card_type": "VISA"},
            {"encrypted_value": "must be a string"},
        ),
        (
            {"encrypted_value": "x", "plan_id": "", "card_type": "VISA"},
            {"plan_id": "must not be empty"},
        ),
    ],
)
async def test_tokenize_request_fields(
    api: Api, body: dict[str, Any], fields: dict[str, str]
) -> None:
    reply = await api.post("/v1/card/tokenize", body)
    assert reply.status == 400
    assert reply.body["error"] == "invalid_request"
    assert reply.body["fields"] == fields


async def _tokenize_value(api: Api, value: str) -> Any:
    body = {"encrypted_value": value, "plan_id": "pp-gold", "card_type": "VISA"}
    return await api.post("/v1/card/tokenize", body)


@pytest.mark.parametrize("value", ["not-a-jwe", "a.b.c.d.e", "!!!.b.c.d.e", "WzFd.b.c.d.e"])
async def test_values_that_are_not_a_jwe(api: Api, value: str) -> None:
    reply = await _tokenize_value(api, value)
    assert reply.status == 400
    assert reply.body["error"] == "invalid_encrypted_value"


async def test_jwe_for_another_key_does_not_decrypt(api: Api) -> None:
    kid = (await api.jwks())["keys"][0]["kid"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    foreign = RSAKey.import_key(pem).as_dict()
    value = encrypt(VISA, {"keys": [foreign]}, kid=kid)
    reply = await _tokenize_value(api, value)
    assert error_body(reply) == {
        "error": "invalid_encrypted_value",
        "error_description": "encrypted_value does not decrypt with the sandbox key.",
        "code": 400,
    }
    tampered = encrypt(VISA, await api.jwks())
    head, key, iv, text, tag = tampered.split(".")
    reply = await _tokenize_value(api, ".".join((head, key, iv, text[::-1], tag)))
    assert reply.body["error"] == "invalid_encrypted_value"


async def test_plaintext_that_is_not_json(api: Api) -> None:
    value = encrypt(b"\x00not json", await api.jwks())
    reply = await _tokenize_value(api, value)
    assert reply.body["error_description"] == "The decrypted card data is not JSON."


async def test_rotation_retires_the_old_kid(api: Api) -> None:
    old_jwks = await api.jwks()
    old_value = encrypt(VISA, old_jwks)
    new_kid = api.sandbox.rotate_keys()
    new_jwks = await api.jwks()
    assert [k["kid"] for k in new_jwks["keys"]] == [new_kid]
    assert new_kid != old_jwks["keys"][0]["kid"]
    reply = await _tokenize_value(api, old_value)
    assert error_body(reply) == {
        "error": "invalid_encryption_key",
        "error_description": "The encryption key is unknown or retired; fetch the keys again.",
        "code": 400,
    }
    unknown = encrypt(VISA, new_jwks, kid="sbx-unknown")
    assert (await _tokenize_value(api, unknown)).body["error"] == "invalid_encryption_key"
    assert (await _tokenize_value(api, encrypt(VISA, new_jwks))).status == 200


async def test_encryption_key_loaded_from_pem() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    config = SandboxConfig(encryption_key_pem=pem, rate_key="off")
    async with Sandbox(config) as sb, aiohttp.ClientSession() as session:
        api = Api(session, sb)
        served = (await api.jwks())["keys"][0]
        modulus = private.public_key().public_numbers().n
        assert served["n"] == RSAKey.import_key(pem).as_dict(private=False)["n"]
        assert int.from_bytes(base64.urlsafe_b64decode(served["n"] + "==")) == modulus
        assert (await api.tokenize()).status == 200
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="private key"):
        Sandbox(SandboxConfig(encryption_key_pem=public_pem))


async def test_enrol_token_is_single_use(api: Api) -> None:
    token = await api.enrol_token()
    assert (await api.create(enrol_token=token)).status == 200
    reply = await api.create(enrol_token=token)
    assert error_body(reply) == {
        "error": "invalid_enrol_token",
        "error_description": "Provided enrol_token is invalid or expired",
        "code": 400,
    }


async def test_enrol_token_expires(api: Api) -> None:
    token = await api.enrol_token()
    api.sandbox.clock.advance(900.0)
    reply = await api.create(enrol_token=token)
    assert reply.body["error"] == "invalid_enrol_token"


async def test_enrol_token_of_another_client_is_invalid(api: Api) -> None:
    token = await api.enrol_token()
    other = await api.token("other", "other-secret")
    reply = await api.post(
        "/v1/pass/create",
        {
            "plan_id": "pp-gold",
            "enrol_token": token,
            "holder": {"first_name": "A", "last_name": "B", "email": "a@b.co"},
        },
        headers={"Authorization": f"Bearer {other}"},
    )
    assert reply.body["error"] == "invalid_enrol_token"


@pytest.fixture
def loyaltylayer_sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        rate_key="off",
        clients={"sandbox-client": "sandbox-secret", "other": "other-secret"},
        clock=standing_clock(),
    )


async def test_no_card_data_in_journal_or_errors(api: Api) -> None:
    canary = "4000000000000002"
    value = encrypt(_card(CardNumber=canary, Cvv="987"), await api.jwks())
    replies = [await _tokenize_value(api, value)]
    replies.append(await api.tokenize(_card(CardNumber=canary[:-1] + "3", Cvv="987")))
    assert replies[0].status == 200
    text = repr(api.sandbox.journal()) + json.dumps([r.body for r in replies])
    for secret in (canary, canary[:-1] + "3", value, "sandbox-secret", await api.token()):
        assert secret not in text
    # Three digits can occur inside random ids; standing alone they would be the CVV.
    assert re.search(r"(?<![\w.])987(?![\w.])", text) is None
