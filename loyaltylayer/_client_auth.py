"""How the token request proves who the client is: OAuth 2.0 client authentication.

* ``client_secret_post``: the id and secret in the JSON body, as the integration guide shows
  (the default);
* ``client_secret_basic``: an HTTP Basic ``Authorization`` header (RFC 6749 §2.3.1), made by
  authlib's ``ClientAuth``;
* ``private_key_jwt``: a JWT signed with the client's private key (RFC 7523 §2.2), made by
  authlib's ``rfc7523`` (which signs through joserfc). The server keeps only the public key, and
  each assertion is good for one request: every attempt, a retry too, signs a new one.

authlib has no aiohttp client, so its pieces are applied to the SDK's own request. authlib and
the key are loaded when the client is made, and only for the two methods that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args
from urllib.parse import quote_plus

from ._secrets import Secret

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, RSAKey

__all__ = [
    "ENV_PRIVATE_KEY",
    "ENV_TOKEN_AUTH_METHOD",
    "ClientAuthentication",
    "TokenAuthMethod",
    "client_authentication",
]

ENV_TOKEN_AUTH_METHOD = "LOYALTYLAYER_TOKEN_AUTH_METHOD"
ENV_PRIVATE_KEY = "LOYALTYLAYER_PRIVATE_KEY"

TokenAuthMethod = Literal["client_secret_post", "client_secret_basic", "private_key_jwt"]
TOKEN_AUTH_METHODS: tuple[str, ...] = get_args(TokenAuthMethod)

ASSERTION_LIFETIME = 300
"""Seconds a client assertion is valid: it is sent at once, and a retry signs a new one."""

_GRANT = {"grant_type": "client_credentials"}
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PEM_START = "-----BEGIN"


class ClientAuthentication:
    """The parts of a token request that authenticate the client."""

    __slots__ = ("_client_id",)

    method: ClassVar[TokenAuthMethod]

    def __init__(self, client_id: str) -> None:
        self._client_id = client_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} client_id={self._client_id!r}>"

    def body(self) -> dict[str, str]:
        """The JSON body of one attempt (made for each: an assertion may be used once)."""
        return dict(_GRANT)

    def headers(self) -> dict[str, str]:
        """Headers every attempt sends."""
        return {}


class _SecretPost(ClientAuthentication):
    __slots__ = ("_secret",)
    method = "client_secret_post"

    def __init__(self, client_id: str, secret: str) -> None:
        super().__init__(client_id)
        self._secret = Secret(secret)

    def body(self) -> dict[str, str]:
        return {"client_id": self._client_id, "client_secret": self._secret, **_GRANT}


class _SecretBasic(ClientAuthentication):
    __slots__ = ("_authorization",)
    method = "client_secret_basic"

    def __init__(self, client_id: str, secret: str, token_url: str) -> None:
        from authlib.oauth2.auth import ClientAuth

        super().__init__(client_id)
        # RFC 6749 §2.3.1: both are form-urlencoded before they are joined (authlib leaves
        # that to its caller), so a ':' or a non-ASCII character survives the trip.
        auth = ClientAuth(_form_encoded(client_id), _form_encoded(secret), self.method)
        _, headers, _ = auth.prepare("POST", token_url, {}, "")
        self._authorization = Secret(headers["Authorization"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._authorization}


class _PrivateKeyJWT(ClientAuthentication):
    __slots__ = ("_algorithm", "_key", "_token_url")
    method = "private_key_jwt"

    def __init__(self, client_id: str, key: RSAKey | ECKey, algorithm: str, token_url: str):
        super().__init__(client_id)
        self._key = key
        self._algorithm = algorithm
        self._token_url = token_url

    def body(self) -> dict[str, str]:
        from authlib.oauth2.rfc7523 import private_key_jwt_sign
        from authlib.oauth2.rfc7523.client import ASSERTION_TYPE

        assertion = Secret(
            private_key_jwt_sign(
                self._key,
                client_id=self._client_id,
                token_endpoint=self._token_url,
                alg=self._algorithm,
                expires_in=ASSERTION_LIFETIME,
            )
        )
        return {
            "client_id": self._client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            **_GRANT,
        }


def _form_encoded(value: str) -> str:
    return quote_plus(value, safe="")


def client_authentication(
    errors: dict[str, str],
    *,
    client_id: str,
    client_secret: object,
    method: object,
    private_key: object,
    token_url: str,
) -> ClientAuthentication | None:
    """The client authentication the arguments ask for; what is wrong with them goes into
    ``errors`` (and ``None`` comes back). ``method=None`` means ``private_key_jwt`` when a key
    is given, ``client_secret_post`` otherwise."""
    if method is None:
        method = "private_key_jwt" if private_key is not None else "client_secret_post"
    if method not in TOKEN_AUTH_METHODS:
        errors["token_auth_method"] = f"must be one of {', '.join(TOKEN_AUTH_METHODS)}"
        return None
    if method != "private_key_jwt":
        if not isinstance(client_secret, str) or not client_secret:
            errors["client_secret"] = "must be a non-empty string"
        if private_key is not None:
            errors["private_key"] = "is for token_auth_method='private_key_jwt'"
        if errors or not isinstance(client_secret, str):
            return None
        if method == "client_secret_basic":
            return _SecretBasic(client_id, client_secret, token_url)
        return _SecretPost(client_id, client_secret)
    if client_secret is not None:
        errors["client_secret"] = "must be None with private_key_jwt: the private key replaces it"
    if private_key is None:
        errors["private_key"] = "is required for private_key_jwt"
        return None
    loaded = _load_private_key(errors, private_key)
    if errors or loaded is None:
        return None
    return _PrivateKeyJWT(client_id, *loaded, token_url)


def _load_private_key(
    errors: dict[str, str], private_key: object
) -> tuple[RSAKey | ECKey, str] | None:
    """An unencrypted RSA (2048 bits or more) or EC private key, from PEM bytes or text, or
    from the path of a PEM file, and the algorithm that signs with it. Messages never quote the
    key (nor the path)."""
    if isinstance(private_key, str) and private_key.lstrip().startswith(_PEM_START):
        pem = private_key.encode()
    elif isinstance(private_key, bytes):
        pem = private_key
    elif isinstance(private_key, str | os.PathLike):
        try:
            pem = Path(private_key).read_bytes()
        except OSError as error:
            errors["private_key"] = f"cannot read the key file ({error.strerror or 'unreadable'})"
            return None
    else:
        errors["private_key"] = "must be PEM bytes or text, or the path of a PEM file"
        return None
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from joserfc.jwk import ECKey, RSAKey

    native: Any
    try:
        native = load_pem_private_key(pem, password=None)
    except TypeError:
        errors["private_key"] = "is encrypted: give the key unencrypted (protect the file instead)"
        return None
    except ValueError:
        errors["private_key"] = "is not a PEM private key"
        return None
    if isinstance(native, rsa.RSAPrivateKey) and native.key_size >= 2048:
        return RSAKey.import_key(pem), "RS256"
    if isinstance(native, ec.EllipticCurvePrivateKey) and native.curve.name in _EC_ALGORITHMS:
        return ECKey.import_key(pem), _EC_ALGORITHMS[native.curve.name]
    errors["private_key"] = "must be an RSA key of 2048 bits or more, or an EC key on P-256/384/521"
    return None
