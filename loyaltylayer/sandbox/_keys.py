"""The card-encryption key set: RSA keys, their JWK Set, rotation and JWE decryption."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import threading
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from ._errors import ApiError

__all__ = ["KeyRing", "generate_key"]

ALG = "RSA-OAEP-256"
_ALGORITHMS = [ALG, "A256GCM", "A192GCM", "A128GCM", "A256CBC-HS512", "A128CBC-HS256"]
_KEY_LIFETIME = 30 * 86400.0
_BITS = 2048

_first_key: RSAKey | None = None
_first_key_lock = threading.Lock()


def generate_key(*, fresh: bool) -> RSAKey:
    """A 2048-bit RSA key. The first one is shared by later sandboxes of this process.

    Generating a key takes a noticeable fraction of a second; test suites start a sandbox per
    test, and a sandbox's security does not depend on its key being unique. Rotation asks for a
    ``fresh`` key, so a rotated sandbox never shares its new key with another one.
    """
    global _first_key
    if fresh:
        return RSAKey.generate_key(_BITS, private=True)
    with _first_key_lock:
        if _first_key is None:
            _first_key = RSAKey.generate_key(_BITS, private=True)
        return _first_key


def _invalid_value(description: str) -> ApiError:
    return ApiError(400, "invalid_encrypted_value", description)


def _unknown_key() -> ApiError:
    return ApiError(
        400,
        "invalid_encryption_key",
        "The encryption key is unknown or retired; fetch the keys again.",
    )


def _b64_json(segment: str) -> object:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


class KeyRing:
    """The active key (served as the JWK Set) and the retired kids (refused: refetch the keys)."""

    def __init__(self, key: RSAKey, *, created_at: float) -> None:
        self._keys: dict[str, RSAKey] = {}
        self._retired: set[str] = set()
        self._active = ""
        self._jwks: dict[str, Any] = {}
        self._install(key, created_at)

    @classmethod
    def from_pem(cls, pem: str | bytes, *, created_at: float) -> KeyRing:
        key = RSAKey.import_key(pem)
        if not key.is_private:
            raise ValueError("the sandbox encryption key must be an RSA private key")
        return cls(key, created_at=created_at)

    def _install(self, key: RSAKey, created_at: float) -> None:
        kid = "sbx-" + key.thumbprint()[:16]
        if kid in self._keys:
            raise ValueError("the new key must differ from the keys already used")
        if self._active:
            self._retired.add(self._active)
        self._keys[kid] = key
        self._active = kid
        expires = _dt.datetime.fromtimestamp(created_at + _KEY_LIFETIME, _dt.UTC)
        public = key.as_dict(private=False)
        self._jwks = {
            "keys": [
                {
                    **public,
                    "kid": kid,
                    "use": "enc",
                    "alg": ALG,
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ]
        }

    @property
    def active_kid(self) -> str:
        return self._active

    @property
    def retired_kids(self) -> frozenset[str]:
        return frozenset(self._retired)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (built once per rotation, so key fetches stay cheap)."""
        return self._jwks

    def rotate(self, *, now: float) -> str:
        """Make a fresh key active and retire the old one; returns the new kid."""
        self._install(generate_key(fresh=True), now)
        return self._active

    def decrypt(self, token: str) -> bytes:
        """The plaintext of a compact JWE made with the active key; the API's 400 otherwise.

        The error never quotes the token: it carries card data.
        """
        parts = token.split(".")
        if len(parts) != 5:
            raise _invalid_value("encrypted_value is not a compact JWE.")
        try:
            header = _b64_json(parts[0])
        except (ValueError, UnicodeError, binascii.Error, RecursionError):
            raise _invalid_value("encrypted_value has an unreadable JWE header.") from None
        if not isinstance(header, dict):
            raise _invalid_value("encrypted_value has an unreadable JWE header.")
        kid = header.get("kid", self._active)
        if not isinstance(kid, str) or kid not in self._keys or kid in self._retired:
            raise _unknown_key()
        try:
            decrypted = jwe.decrypt_compact(token, self._keys[kid], algorithms=_ALGORITHMS)
            plaintext = decrypted.plaintext
        except (JoseError, ValueError, TypeError):
            plaintext = None
        if plaintext is None:
            raise _invalid_value("encrypted_value does not decrypt with the sandbox key.")
        return plaintext
