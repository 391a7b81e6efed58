"""How the client reaches the API: its proxy, its TLS settings, and the session it opens.

Everything is checked when the client is made, so a missing file, a key that does not match
its certificate or a broken proxy URL fails with the option named, before any request.

The proxy for each API origin is decided once, when the session opens: the ``proxy`` given,
else (with ``trust_env``) the one ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` name unless
``NO_PROXY`` exempts the host, as requests and httpx decide it. aiohttp's own ``trust_env``
is left off: it would look the proxy up again on a thread for every request, and send
``~/.netrc`` passwords to the API.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import attrs

from ._config import check_clean_url
from ._errors import ConfigurationError, ValidationError
from ._secrets import Secret

__all__ = ["Network", "Proxy", "default_ssl_context", "make_network"]

PathLike = str | os.PathLike[str]


@attrs.frozen
class Proxy:
    """A forward proxy: its URL without credentials, and the header that carries them."""

    url: str
    headers: Mapping[str, str] | None = attrs.field(default=None, repr=False)

    @classmethod
    def parse(cls, name: str, url: str) -> Proxy:
        """``http(s)://[user:password@]host:port``; the credentials become a Secret header.

        They are cut off first and only ever held as secrets, so that no frame of a failure
        here holds them in plain text.
        """
        if not isinstance(url, str):
            raise ValidationError({name: "must be an http(s):// proxy URL"})
        url = Secret(url)
        start = url.find("://") + 3
        at = url.rfind("@", start)
        bare = str(url) if at < 0 else url[:start] + url[at + 1 :]
        parts = check_clean_url(name, bare)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError({name: "must be an http(s):// proxy URL"})
        if parts.path not in ("", "/") or parts.query:
            raise ValidationError({name: "must be scheme://host:port, with no path or query"})
        if at < 0:
            return cls(bare.rstrip("/"))
        return cls(bare.rstrip("/"), {"Proxy-Authorization": _basic(url[start:at])})


def _basic(userinfo: str) -> Secret:
    """The Basic credentials of ``user[:password]`` (percent-encoded, as in a URL)."""
    pair = userinfo if ":" in userinfo else Secret(userinfo + ":")
    return Secret("Basic " + base64.b64encode(unquote(pair).encode()).decode())


def _environment_proxy(scheme: str) -> tuple[str, Secret | None]:
    """The variable (``HTTPS_PROXY``, ``ALL_PROXY``...) naming the proxy for ``scheme``, and
    that proxy's URL, which may hold credentials."""
    proxies = urllib.request.getproxies()
    key = scheme if proxies.get(scheme) else "all"
    found = proxies.get(key)
    return f"{key.upper()}_PROXY", Secret(found) if found else None


@attrs.frozen(kw_only=True)
class Network:
    """The checked network settings of one client."""

    proxy: Proxy | None
    trust_env: bool
    ssl_context: ssl.SSLContext | None
    """Made from the client's TLS options; ``None``: the shared :func:`default_ssl_context`."""
    presents_certificate: bool
    """Whether a client certificate may be presented (``ssl_context`` may hold one)."""

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy requests to ``url`` go through, or ``None`` to connect directly."""
        if self.proxy is not None or not self.trust_env:
            return self.proxy
        parts = urlsplit(url)
        if urllib.request.proxy_bypass(parts.hostname or ""):
            return None
        variable, found = _environment_proxy(parts.scheme)
        return Proxy.parse(variable, found) if found else None


def _no_password() -> NoReturn:
    raise ConfigurationError(
        "client_key is encrypted: give an unencrypted PEM key, or build an ssl_context"
    )


def _existing(name: str, value: PathLike) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(f"{name} must be a path")
    path = Path(value)
    if not path.exists():
        raise ConfigurationError(f"{name}: {path} does not exist")
    return path


def _tls_1_2_or_later() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's CAs, TLS 1.2 or later: made once per process, by the first https client."""
    return _tls_1_2_or_later()


def _own_ssl_context(
    ca_bundle: PathLike | None, client_cert: PathLike | None, client_key: PathLike | None
) -> ssl.SSLContext:
    context = _tls_1_2_or_later()
    if ca_bundle is not None:
        path = _existing("ca_bundle", ca_bundle)
        try:
            if path.is_dir():
                context.load_verify_locations(capath=path)
            else:
                context.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError, ValueError):
            raise ConfigurationError(
                f"ca_bundle: no PEM certificate can be read from {path}"
            ) from None
    if client_key is not None and client_cert is None:
        raise ConfigurationError("client_key needs client_cert (the certificate it belongs to)")
    if client_cert is not None:
        cert = _existing("client_cert", client_cert)
        key = _existing("client_key", client_key) if client_key is not None else None
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except ConfigurationError:  # from _no_password (a ValueError too)
            raise
        except (ssl.SSLError, OSError, ValueError):
            what = "client_cert and client_key" if key is not None else "client_cert"
            raise ConfigurationError(
                f"{what}: cannot load a PEM certificate and the private key that matches it"
            ) from None
    return context


def make_network(
    *,
    proxy: str | None,
    trust_env: bool,
    ca_bundle: PathLike | None,
    client_cert: PathLike | None,
    client_key: PathLike | None,
    ssl_context: ssl.SSLContext | None,
    own_session: bool,
) -> Network:
    """The client's network settings, checked; a :class:`ConfigurationError` names the option.

    ``ssl_context`` is used as it is (full control), but it may not allow TLS below 1.2.
    """
    if not isinstance(trust_env, bool):
        raise ConfigurationError("trust_env must be True or False")
    files_given = any(option is not None for option in (ca_bundle, client_cert, client_key))
    if ssl_context is not None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context must be an ssl.SSLContext")
        if files_given:
            raise ConfigurationError(
                "give ssl_context or ca_bundle/client_cert/client_key, not both"
            )
        if ssl_context.minimum_version < ssl.TLSVersion.TLSv1_2:
            raise ConfigurationError("ssl_context must not allow TLS below 1.2 (minimum_version)")
    if not own_session and (files_given or ssl_context is not None):
        raise ConfigurationError(
            "TLS options configure the session the client opens: with session=, "
            "give them to its connector instead"
        )
    presents_certificate = client_cert is not None or ssl_context is not None
    if files_given:
        ssl_context = _own_ssl_context(ca_bundle, client_cert, client_key)
    return Network(
        proxy=Proxy.parse("proxy", proxy) if proxy is not None else None,
        trust_env=trust_env,
        ssl_context=ssl_context,
        presents_certificate=presents_certificate,
    )
