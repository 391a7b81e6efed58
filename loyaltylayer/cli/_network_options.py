"""``--proxy``, ``--ca-bundle``, ``--client-cert``, ``--client-key``: one decorator for every
command that talks to the API.

The options override ``LOYALTYLAYER_PROXY``, ``_CA_BUNDLE``, ``_CLIENT_CERT`` and
``_CLIENT_KEY``, which the client reads itself; ``HTTPS_PROXY`` and ``NO_PROXY`` are honoured
when neither names a proxy. The command gets them as one ``network`` mapping of client options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._secrets import Secret

__all__ = ["network_options"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option(
        "--proxy",
        metavar="URL",
        help="HTTP(S) forward proxy, http://[user:password@]host:port; prefer the environment "
        "for one with a password [env: LOYALTYLAYER_PROXY, else HTTPS_PROXY and NO_PROXY].",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(exists=True, path_type=Path),
        help="PEM file or directory of CAs to trust besides the system's "
        "[env: LOYALTYLAYER_CA_BUNDLE].",
    ),
    click.option(
        "--client-cert",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="PEM client certificate for mTLS [env: LOYALTYLAYER_CLIENT_CERT].",
    ),
    click.option(
        "--client-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="PEM private key of --client-cert, unencrypted [env: LOYALTYLAYER_CLIENT_KEY].",
    ),
)


def network_options(command: F) -> F:
    """Add the four options to ``command``, which receives them as ``network``: the client
    options given on the command line (a proxy URL held as a secret)."""

    @functools.wraps(command)
    def with_network(
        *args: Any,
        proxy: str | None,
        ca_bundle: Path | None,
        client_cert: Path | None,
        client_key: Path | None,
        **kwargs: Any,
    ) -> Any:
        given = {
            "proxy": None if proxy is None else Secret(proxy),
            "ca_bundle": ca_bundle,
            "client_cert": client_cert,
            "client_key": client_key,
        }
        network = {name: value for name, value in given.items() if value is not None}
        return command(*args, network=network, **kwargs)

    decorated: Any = with_network
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
