"""Card encryption: a card becomes a JWE only the API can read.

``encrypt_card`` is public so users with their own HTTP stack get the same encryption the
client uses. The plaintext exists only inside this function; nothing here logs or keeps it.

joserfc (and through it ``cryptography``) is imported on the first call that needs it, not with
the package: ``import loyaltylayer`` stays light for code that never encrypts a card.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from ._errors import ValidationError
from ._json import encode_compact
from ._models import Card, EncryptionKey, EncryptionKeySet

__all__ = ["SUPPORTED_KEY_ALGORITHMS", "choose_key", "encrypt_card", "import_key"]

SUPPORTED_KEY_ALGORITHMS = ("RSA-OAEP-256", "RSA-OAEP")
_CONTENT_ENCRYPTION = "A256GCM"

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

KeyLike: TypeAlias = "RSAKey | EncryptionKey | EncryptionKeySet | Mapping[str, Any] | str | bytes"


def choose_key(keys: EncryptionKeySet) -> EncryptionKey:
    """The first key meant for encryption with an algorithm we support (the contract's rule)."""
    for key in keys.keys:
        if (
            key.kty == "RSA"
            and key.use in (None, "enc")
            and key.alg in (None, *SUPPORTED_KEY_ALGORITHMS)
        ):
            return key
    raise ValidationError({"key": "no RSA encryption key with a supported algorithm"})


@functools.cache
def _rsa_key_type() -> type[RSAKey]:
    # Deferred: joserfc imports cryptography, which only a program that encrypts cards needs.
    from joserfc.jwk import RSAKey

    return RSAKey


def import_key(key: KeyLike) -> RSAKey:
    """Any of the key forms :func:`encrypt_card` accepts, as a joserfc key (for caching)."""
    rsa_key = _rsa_key_type()
    if isinstance(key, rsa_key):
        return key  # every encryption with a key imported once comes here: keep it cheap
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if isinstance(key, EncryptionKeySet):
        key = choose_key(key)
    if isinstance(key, EncryptionKey):
        key = key.as_jwk()
    try:
        if isinstance(key, Mapping) and "keys" in key:
            jwks = key.get("keys")
            if not isinstance(jwks, list):
                raise ValidationError({"key": "a JWK Set must have a list of keys"})
            candidates = [k for k in jwks if isinstance(k, Mapping) and k.get("kty") == "RSA"]
            chosen = next(
                (
                    k
                    for k in candidates
                    if k.get("use", "enc") == "enc"
                    and k.get("alg", "RSA-OAEP-256") in SUPPORTED_KEY_ALGORITHMS
                ),
                None,
            )
            if chosen is None:
                raise ValidationError({"key": "no RSA encryption key with a supported algorithm"})
            imported = KeySet.import_key_set({"keys": [dict(chosen)]}).keys[0]
        elif isinstance(key, Mapping):
            imported = rsa_key.import_key(dict(key))
        else:
            imported = rsa_key.import_key(cast("str | bytes", key))  # an RSAKey returned above
    except (JoseError, ValueError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError({"key": "is not an RSA public key (JWK, JWK Set or PEM)"}) from None
    if not isinstance(imported, rsa_key):
        raise ValidationError({"key": "must be an RSA key"})
    return imported


def encrypt_card(card: Card, key: KeyLike) -> str:
    """Encrypt ``card`` for ``POST /v1/card/tokenize``: a JWE in compact serialization.

    ``key`` is a JWK dict, a JWK Set (the first usable key is taken), an :class:`EncryptionKey`
    or :class:`EncryptionKeySet`, or a PEM. The header names the key's ``kid`` so the server can
    pick the right private key during a rotation. The card's plaintext is never a local
    variable here, so no traceback can show it; the JWE is a plain ``str`` (for any HTTP stack),
    which the client holds as a :class:`~loyaltylayer.Secret`.
    """
    if not isinstance(card, Card):
        raise ValidationError({"card": "must be a loyaltylayer.Card"})
    rsa = import_key(key)
    alg = rsa.alg if rsa.alg in SUPPORTED_KEY_ALGORITHMS else "RSA-OAEP-256"
    header = {"alg": alg, "enc": _CONTENT_ENCRYPTION, "cty": "application/json"}
    if rsa.kid:
        header["kid"] = rsa.kid
    from joserfc import jwe  # deferred, like joserfc.jwk in import_key

    return jwe.encrypt_compact(
        header,
        encode_compact(
            {
                "CardNumber": card.number,
                "CardExpiry": card.expiry,
                "NameOnCard": card.name,
                "Cvv": card.cvv,
            }
        ).encode(),
        rsa,
        algorithms=[alg, _CONTENT_ENCRYPTION],
    )
