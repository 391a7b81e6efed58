"""Who asks for a token: the three ways a client may authenticate at ``/auth/token``.

Each client is registered for one method (RFC 7591's ``token_endpoint_auth_method``):

* ``client_secret_post`` (the guide's way, and every client's unless registered otherwise):
  ``client_id`` and ``client_secret`` in the JSON body;
* ``client_secret_basic``: ``Authorization: Basic`` with the form-urlencoded id and secret
  (RFC 6749 §2.3.1);
* ``private_key_jwt``: a JWT signed with the client's key (RFC 7523 §2.2, §3), checked with the
  public key it was registered with: ``iss`` and ``sub`` are the client, ``aud`` is this token
  endpoint, ``exp`` has not passed, and its ``jti`` was never used before.

Any failure answers the guide's ``401 invalid_client``, and says nothing of what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote_plus

import attrs

from ._errors import ApiError, invalid_request
from ._validate import parse_grant_type, parse_token_request

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, RSAKey

__all__ = [
    "ASSERTION_TYPE",
    "AssertionLog",
    "ClientRegistration",
    "TokenAuthMethod",
    "authenticate_client",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 §2.2 (written out: the sandbox shares no code with the client it checks)."""
TokenAuthMethod = Literal["client_secret_post", "client_secret_basic", "private_key_jwt"]
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
LEEWAY = 30.0
"""Seconds of clock skew allowed when checking an assertion's ``exp``."""


def _public_key(registration: ClientRegistration) -> RSAKey | ECKey | None:
    pem = registration.public_key
    if pem is None:
        return None
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    data = pem.encode() if isinstance(pem, str) else pem
    for key_type in (RSAKey, ECKey):
        try:
            key = key_type.import_key(data)
        except (ValueError, TypeError, JoseError):
            continue
        if not key.is_private:
            return key
    raise ValueError("ClientRegistration.public_key must be an RSA or EC public key in PEM")


def _check_registration(instance: ClientRegistration, _attribute: Any, _value: object) -> None:
    if instance.token_auth_method not in get_args(TokenAuthMethod):
        choices = ", ".join(get_args(TokenAuthMethod))
        raise ValueError(f"ClientRegistration.token_auth_method must be one of {choices}")
    if (instance.public_key is None) == (instance.token_auth_method == "private_key_jwt"):
        raise ValueError("ClientRegistration.public_key is for private_key_jwt, and it needs one")


@attrs.frozen(kw_only=True)
class ClientRegistration:
    """How one client authenticates at ``/auth/token``; ``public_key`` (PEM) for
    ``private_key_jwt``, whose client needs no secret in ``SandboxConfig.clients``."""

    token_auth_method: TokenAuthMethod = attrs.field(
        default="client_secret_post", validator=_check_registration
    )
    public_key: str | bytes | None = attrs.field(default=None, repr=False)
    verifying_key: RSAKey | ECKey | None = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(_public_key, takes_self=True),
    )


class AssertionLog:
    """The ``jti`` of every assertion accepted, each kept until its ``exp`` has passed."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}

    def first_use(self, client_id: str, jti: str, exp: float, now: float) -> bool:
        """Record ``jti``; ``False`` when the client used it before (a replay)."""
        self._until = {key: until for key, until in self._until.items() if until >= now}
        if (client_id, jti) in self._until:
            return False
        self._until[(client_id, jti)] = exp + LEEWAY
        return True


def _invalid_client(*, basic: bool = False) -> ApiError:
    # RFC 6749 §5.2: a client that tried Basic is told the scheme.
    headers = {"WWW-Authenticate": 'Basic realm="loyaltylayer"'} if basic else None
    return ApiError(401, "invalid_client", "Client authentication failed.", headers=headers)


def authenticate_client(
    *,
    clients: Mapping[str, str],
    registrations: Mapping[str, ClientRegistration],
    assertions: AssertionLog,
    body: dict[str, Any],
    authorization: str | None,
    token_url: str,
    now: float,
) -> str:
    """The client the token request comes from, once it has proven it; raises the ApiError."""
    basic = authorization is not None and authorization[:6].lower() == "basic "
    asserted = "client_assertion" in body or "client_assertion_type" in body
    if basic + asserted + ("client_secret" in body) > 1:
        raise invalid_request({"client_authentication": "use exactly one method"})
    if basic:
        assert authorization is not None
        parse_grant_type(body)
        client_id, secret = _basic_credentials(authorization[6:])
        method: TokenAuthMethod = "client_secret_basic"
    elif asserted:
        parse_grant_type(body)
        client_id = _asserted_client(body)
        method = "private_key_jwt"
    else:
        client_id, secret = parse_token_request(body)
        method = "client_secret_post"
    registration = registrations.get(client_id, ClientRegistration())
    if registration.token_auth_method != method:
        raise _invalid_client(basic=basic)
    if method == "private_key_jwt":
        assert registration.verifying_key is not None
        _check_assertion(body, client_id, registration.verifying_key, assertions, token_url, now)
        return client_id
    expected = clients.get(client_id)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise _invalid_client(basic=basic)
    return client_id


def _basic_credentials(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client(basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise _invalid_client(basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _asserted_client(body: dict[str, Any]) -> str:
    """The client an assertion names (``sub``), read before its signature is checked."""
    fields = {
        key: "must be a string"
        for key in ("client_assertion_type", "client_assertion")
        if not isinstance(body.get(key), str)
    }
    if fields:
        raise invalid_request(fields)
    if body["client_assertion_type"] != ASSERTION_TYPE:
        raise _invalid_client()
    from joserfc import jws
    from joserfc.errors import JoseError

    try:
        claims = json.loads(jws.extract_compact(body["client_assertion"].encode()).payload)
    except (JoseError, ValueError):
        raise _invalid_client() from None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or body.get("client_id", subject) != subject:
        raise _invalid_client()
    return subject


def _check_assertion(
    body: dict[str, Any],
    client_id: str,
    key: RSAKey | ECKey,
    assertions: AssertionLog,
    token_url: str,
    now: float,
) -> None:
    from joserfc import jwt
    from joserfc.errors import JoseError

    try:
        claims = jwt.decode(body["client_assertion"], key, algorithms=_ALGORITHMS).claims
    except (JoseError, ValueError):
        raise _invalid_client() from None
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    exp, jti = claims.get("exp"), claims.get("jti")
    if (
        claims.get("iss") != client_id
        or token_url not in audiences
        or not isinstance(exp, int | float)
        or isinstance(exp, bool)
        or not math.isfinite(exp)
        or exp + LEEWAY < now
        or not isinstance(jti, str)
        or not jti
        or not assertions.first_use(client_id, jti, exp, now)
    ):
        raise _invalid_client()
