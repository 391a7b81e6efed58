"""Client settings read from the environment, and the checks every base URL must pass."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = [
    "ENV_AUTH_URL",
    "ENV_BASE_URL",
    "ENV_CLIENT_ID",
    "ENV_CLIENT_SECRET",
    "ENV_REDIS_URL",
    "check_url",
    "env",
]

ENV_CLIENT_ID = "LOYALTYLAYER_CLIENT_ID"
ENV_CLIENT_SECRET = "LOYALTYLAYER_CLIENT_SECRET"
ENV_BASE_URL = "LOYALTYLAYER_BASE_URL"
ENV_AUTH_URL = "LOYALTYLAYER_AUTH_URL"
ENV_REDIS_URL = "LOYALTYLAYER_REDIS_URL"


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


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


def check_url(name: str, url: object) -> str:
    """An absolute https URL, or http to a loopback host (the local sandbox) only.

    Plain http anywhere else would send the client secret and bearer tokens in clear text.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{name} is required")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(f"{name} must use https (plain http is allowed for loopback only)")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must not have a query or fragment")
    return url.rstrip("/")
