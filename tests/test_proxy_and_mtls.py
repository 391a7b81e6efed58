"""Enterprise networking over real sockets: a TLS server with a private CA that demands a client
certificate (mTLS) in front of the sandbox, and a forward proxy (``CONNECT``) with credentials,
through which the requests must pass. Async, sync, ``from_env`` and the CLI alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from network_servers import Pki, make_pki, servers
from sdk_env import CLIENT_ID, CLIENT_SECRET, holder

import loyaltylayer as ll
from loyaltylayer.cli._app import cli
from loyaltylayer.sandbox import SandboxThread

PROXY_USER, PROXY_PASSWORD = "bank@user", "p@ss:w0rd/%"
PROXY_CREDENTIALS = f"{PROXY_USER}:{PROXY_PASSWORD}"
QUOTED_CREDENTIALS = "bank%40user:p%40ss%3Aw0rd%2F%25"


@attrs.frozen(kw_only=True)
class Network:
    pki: Pki
    sandbox: SandboxThread
    api_url: str
    """The mTLS front of the sandbox."""
    proxy_url: str
    """The forward proxy, with its credentials."""
    tunnels: list[str]
    """The ``CONNECT`` lines the proxy accepted."""

    def tls(self) -> dict[str, Any]:
        return {
            "ca_bundle": self.pki.ca,
            "client_cert": self.pki.client_cert,
            "client_key": self.pki.client_key,
        }


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with SandboxThread() as sandbox, servers() as running:
        front = running.mtls_front(pki, sandbox.port)
        proxy_port, tunnels = running.connect_proxy(credentials=PROXY_CREDENTIALS)
        yield Network(
            pki=pki,
            sandbox=sandbox,
            api_url=f"https://127.0.0.1:{front}",
            proxy_url=f"http://{QUOTED_CREDENTIALS}@127.0.0.1:{proxy_port}",
            tunnels=tunnels,
        )


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _tunnel(network: Network) -> str:
    return f"CONNECT {network.api_url.removeprefix('https://')} HTTP/1.1"


async def test_mtls_with_a_private_ca_through_the_proxy(network: Network) -> None:
    tunnels = len(network.tunnels)
    async with ll.AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, network.api_url, proxy=network.proxy_url, **network.tls()
    ) as client:
        created = await client.passes.create(plan_id="esim-5gb", holder=holder())
        texts = [repr(client), repr(client._transport)]
    assert created.pass_id in [p["pass_id"] for p in network.sandbox.passes()]
    assert network.tunnels[tunnels:] == [_tunnel(network)]  # one connection, reused
    assert not any(secret in text for text in texts for secret in (PROXY_PASSWORD, "p%40ss"))


def test_the_sync_client_from_the_environment(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("LOYALTYLAYER_BASE_URL", network.api_url)
    monkeypatch.setenv("LOYALTYLAYER_PROXY", network.proxy_url)
    monkeypatch.setenv("LOYALTYLAYER_CA_BUNDLE", str(network.pki.ca))
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_CERT", str(network.pki.client_cert))
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_KEY", str(network.pki.client_key))
    tunnels = len(network.tunnels)
    with ll.LoyaltyLayer.from_env() as client:
        created = client.passes.create(plan_id="esim-5gb", holder=holder())
        assert client.passes.status(created.pass_id).pass_id == created.pass_id
    assert network.tunnels[tunnels:] == [_tunnel(network)]


async def test_https_proxy_and_no_proxy_from_the_environment(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", network.proxy_url)
    for options, through_proxy in (
        ({}, True),
        ({"trust_env": False}, False),
        ({"proxy": network.proxy_url, "trust_env": False}, True),
    ):
        tunnels = len(network.tunnels)
        async with ll.AsyncLoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, network.api_url, **options, **network.tls()
        ) as client:
            await client.passes.create(plan_id="esim-5gb", holder=holder())
        assert len(network.tunnels) - tunnels == through_proxy, options
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    tunnels = len(network.tunnels)
    async with ll.AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, network.api_url, **network.tls()
    ) as client:
        await client.passes.create(plan_id="esim-5gb", holder=holder())
    assert len(network.tunnels) == tunnels


async def test_without_the_ca_the_server_is_not_trusted_and_nothing_is_sent(
    network: Network,
) -> None:
    journal = len(network.sandbox.journal())
    async with ll.AsyncLoyaltyLayer(
        CLIENT_ID,
        CLIENT_SECRET,
        network.api_url,
        client_cert=network.pki.client_cert,
        client_key=network.pki.client_key,
    ) as client:
        with pytest.raises(ll.ConfigurationError) as excinfo:
            await client.passes.status("pss_1")
        assert client.attempts == 1  # not retried: no retry makes the certificate trusted
    message = str(excinfo.value)
    assert "TLS certificate of 127.0.0.1 is not trusted" in message
    assert "ca_bundle" in message
    assert len(network.sandbox.journal()) == journal


async def test_without_a_client_certificate_the_server_refuses_and_nothing_is_sent(
    network: Network,
) -> None:
    journal = len(network.sandbox.journal())
    async with ll.AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, network.api_url, ca_bundle=network.pki.ca, max_retries=0
    ) as client:
        with pytest.raises(ll.APIConnectionError) as excinfo:
            await client.passes.status("pss_1")
    assert "if the API requires a client certificate (mTLS), give client_cert" in str(excinfo.value)
    assert len(network.sandbox.journal()) == journal


async def test_wrong_proxy_credentials_fail_without_showing_them(network: Network) -> None:
    wrong = network.proxy_url.replace("w0rd", "guess")
    async with ll.AsyncLoyaltyLayer(
        CLIENT_ID, CLIENT_SECRET, network.api_url, proxy=wrong, **network.tls()
    ) as client:
        with pytest.raises(ll.ConfigurationError) as excinfo:
            await client.passes.status("pss_1")
        assert client.attempts == 1  # not retried: the credentials will not change
    assert "the proxy refused its credentials (407" in str(excinfo.value)
    assert "guess" not in f"{excinfo.value} {excinfo.value!r}"


def test_the_cli_talks_through_the_proxy_with_mtls(
    network: Network, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("LOYALTYLAYER_BASE_URL", raising=False)
    pki = network.pki
    options = [
        "--base-url", network.api_url, "--proxy", network.proxy_url, "--ca-bundle", str(pki.ca),
        "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key),
    ]  # fmt: skip
    tunnels = len(network.tunnels)
    result = CliRunner().invoke(cli, ["token", *options])
    assert result.exit_code == 0, result.output
    assert "Credentials OK" in result.output
    assert network.tunnels[tunnels:] == [_tunnel(network)]

    mismatched = [*options[:-1], str(pki.other_key)]
    result = CliRunner().invoke(cli, ["pass", "status", "pss_1", *mismatched])
    assert result.exit_code == 3
    assert "client_cert and client_key: cannot load" in result.output
    assert PROXY_PASSWORD not in result.output

    missing = [*options[:-2], "--client-cert", str(tmp_path / "absent.pem")]
    result = CliRunner().invoke(cli, ["pass", "cancel", "pss_1", *missing])
    assert result.exit_code == 2
    assert "--client-cert" in result.output
    assert len(network.tunnels) == tunnels + 1
