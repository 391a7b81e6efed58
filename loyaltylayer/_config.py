"""Client settings read from the environment, and the checks every base URL must pass."""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import SplitResult, urlsplit

import yarl

from ._errors import ConfigurationError, ValidationError
from ._secrets import Secret

__all__ = [
    "ENV_AUTH_URL",
    "ENV_BASE_URL",
    "ENV_CA_BUNDLE",
    "ENV_CLIENT_CERT",
    "ENV_CLIENT_ID",
    "ENV_CLIENT_KEY",
    "ENV_CLIENT_SECRET",
    "ENV_PROXY",
    "ENV_REDIS_URL",
    "check_clean_url",
    "check_url",
    "env",
    "secret_env",
]

ENV_CLIENT_ID = "LOYALTYLAYER_CLIENT_ID"
ENV_CLIENT_SECRET = "LOYALTYLAYER_CLIENT_SECRET"
ENV_BASE_URL = "LOYALTYLAYER_BASE_URL"
ENV_AUTH_URL = "LOYALTYLAYER_AUTH_URL"
ENV_REDIS_URL = "LOYALTYLAYER_REDIS_URL"
ENV_PROXY = "LOYALTYLAYER_PROXY"
ENV_CA_BUNDLE = "LOYALTYLAYER_CA_BUNDLE"
ENV_CLIENT_CERT = "LOYALTYLAYER_CLIENT_CERT"
ENV_CLIENT_KEY = "LOYALTYLAYER_CLIENT_KEY"

_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f-\x9f]")
"""Control characters and spaces: aiohttp would drop a CR/LF silently (folding what follows
into the path), and a space in a host only fails at connection time, as a retryable error."""
_HOST_NAME = re.compile(r"[A-Za-z0-9._:-]+")
"""What yarl leaves of a host it can connect to: a (punycode) name or an IP address."""


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def secret_env(name: str) -> Secret | None:
    """:func:`env` for a value that is a secret (a client secret, a proxy with a password)."""
    value = env(name)
    return None if value is None else Secret(value)


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (IPv4, IPv6, or IPv4 mapped into IPv6)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_clean_url(name: str, url: str) -> SplitResult:
    """``url``'s parts, if aiohttp will send it as it is written; else a ValidationError.

    Refused: control characters and spaces, a fragment, and anything aiohttp cannot parse.
    """
    if _UNSAFE_CHARACTERS.search(url):
        raise ValidationError({name: "must not contain spaces or control characters"})
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
        host = yarl.URL(url).raw_host
    except ValueError:
        raise ValidationError({name: "is not a URL that can be parsed"}) from None
    if "#" in url:
        raise ValidationError({name: "must not have a fragment"})
    if host is not None and not _HOST_NAME.fullmatch(host):
        raise ValidationError({name: "has a host name that cannot be used"})
    return parts


def check_url(name: str, url: object) -> str:
    """An absolute https URL, or http to a loopback host (the local sandbox) only.

    Plain http anywhere else would send the client secret and bearer tokens in clear text.
    User info is refused: a password in a base URL would show in every repr and results file,
    and HTTP clients send it to the host as credentials.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{name} is required")
    parts = check_clean_url(name, url)
    if "@" in parts.netloc:
        raise ValidationError({name: "must not contain user info (user:password@)"})
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(f"{name} must use https (plain http is allowed for loopback only)")
    if "?" in url:
        raise ConfigurationError(f"{name} must not have a query or fragment")
    return url.rstrip("/")
