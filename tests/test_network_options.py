"""Every bad network option fails when the client is made, naming the option, before any
request; URLs are refused when aiohttp would send something else than what is written; the
environment's proxy is decided as requests and httpx decide it; secrets print as ``'***'``."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from network_servers import Pki, make_pki
from sdk_env import CLIENT_ID, CLIENT_SECRET

import loyaltylayer as ll
from loyaltylayer._network import Proxy, make_network

API = "https://api.example.com"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_secret_is_a_string_that_does_not_show_itself() -> None:
    secret = ll.Secret("sbx_at_" + "x" * 100)
    assert repr(secret) == "'***'"
    assert repr({"Authorization": ll.Secret("Bearer t")}) == "{'Authorization': '***'}"
    assert repr(secret[:80]) == "'***'"  # a slice of a secret is a secret
    assert str(secret) == secret
    assert type(str(secret)) is str
    assert f"{secret}".startswith("sbx_at_")
    assert json.dumps({"t": ll.Secret("abc")}) == '{"t": "abc"}'
    assert secret == "sbx_at_" + "x" * 100
    assert hash(secret) == hash(str(secret))


@pytest.mark.parametrize(
    ("option", "url", "reason"),
    [
        ("base_url", "https://user:hunter2@api.example.com", "must not contain user info"),
        ("base_url", "https://api.example.com/v1\r\nX-Injected: 1", "control characters"),
        ("base_url", "https://api.exa mple.com", "spaces"),
        ("base_url", "https://api.example.com/#top", "must not have a fragment"),
        ("base_url", "https://api.example.com:99999", "is not a URL that can be parsed"),
        ("base_url", "https://[::1", "is not a URL that can be parsed"),
        ("base_url", "https://api%20example.com", "host name that cannot be used"),
        ("auth_url", "https://u:hunter2@auth.example.com", "must not contain user info"),
        ("auth_url", "https://auth.example.com/\t", "control characters"),
    ],
)
def test_unusable_urls_are_refused_naming_the_option(option: str, url: str, reason: str) -> None:
    options = {"base_url": API} | {option: url}
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, **options)
    assert list(excinfo.value.errors) == [option]
    assert reason in excinfo.value.errors[option]
    assert "hunter2" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ca_bundle": "/nowhere/ca.pem"}, "ca_bundle: /nowhere/ca.pem does not exist"),
        ({"client_cert": "/nowhere/c.pem"}, "client_cert: /nowhere/c.pem does not exist"),
        ({"client_key": "KEY"}, "client_key needs client_cert"),
        ({"ca_bundle": "NOT_PEM"}, "ca_bundle: no PEM certificate can be read from"),
        (
            {"client_cert": "CERT", "client_key": "OTHER_KEY"},
            "client_cert and client_key: cannot load a PEM certificate and the private key",
        ),
        ({"client_cert": "CERT"}, "client_cert: cannot load"),  # the key is in no file given
        ({"client_cert": "CERT", "client_key": "ENCRYPTED_KEY"}, "client_key is encrypted"),
        ({"ssl_context": "yes"}, "ssl_context must be an ssl.SSLContext"),
        ({"ssl_context": "TLS_1_0", "ca_bundle": "CA"}, "give ssl_context or ca_bundle"),
        ({"ssl_context": "TLS_1_0"}, "ssl_context must not allow TLS below 1.2"),
        ({"trust_env": "yes"}, "trust_env must be True or False"),
        ({"ca_bundle": "CA", "session": "SESSION"}, "with session=, give them to its connector"),
    ],
)
async def test_bad_tls_options_are_configuration_errors_naming_the_option(
    pki: Pki, options: dict[str, Any], message: str
) -> None:
    files = {
        "CA": pki.ca,
        "NOT_PEM": pki.not_pem,
        "CERT": pki.client_cert,
        "KEY": pki.client_key,
        "OTHER_KEY": pki.other_key,
        "ENCRYPTED_KEY": pki.encrypted_key,
    }
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    given = {name: files.get(value, value) if isinstance(value, str) else value
             for name, value in options.items()}  # fmt: skip
    if given.get("ssl_context") == "TLS_1_0":
        given["ssl_context"] = weak
    async with aiohttp.ClientSession() as session:
        if given.get("session") == "SESSION":
            given["session"] = session
        with pytest.raises(ll.ConfigurationError, match=re.escape(message)):
            ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, API, **given)


def test_good_tls_options_make_a_tls_1_2_context(pki: Pki) -> None:
    network = make_network(
        proxy=None,
        trust_env=True,
        ca_bundle=pki.ca,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        ssl_context=None,
        own_session=True,
    )
    assert network.ssl_context is not None
    assert network.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert network.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert network.presents_certificate
    own = ssl.create_default_context()
    client = ll.LoyaltyLayer(CLIENT_ID, CLIENT_SECRET, API, ssl_context=own, ca_bundle=None)
    assert client._async._transport._network.ssl_context is own
    client.close()


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        ("ftp://proxy.example.com:21", "must be an http(s):// proxy URL"),
        ("http://proxy.example.com:3128/path", "no path or query"),
        ("http://user:hunter2@proxy.exa mple.com:3128", "spaces or control characters"),
        ("proxy.example.com:3128", "must be an http(s):// proxy URL"),
    ],
)
def test_bad_proxy_urls_are_refused_without_showing_credentials(proxy: str, reason: str) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, API, proxy=proxy)
    assert list(excinfo.value.errors) == ["proxy"]
    assert reason in excinfo.value.errors["proxy"]
    assert "hunter2" not in str(excinfo.value)


def test_proxy_credentials_become_a_secret_header() -> None:
    proxy = Proxy.parse("proxy", "http://bank%40user:p%3Ass@proxy.example.com:3128/")
    assert proxy.url == "http://proxy.example.com:3128"
    assert proxy.headers is not None
    header = proxy.headers["Proxy-Authorization"]
    assert header == "Basic YmFua0B1c2VyOnA6c3M="  # base64 of bank@user:p:ss
    assert isinstance(header, ll.Secret)
    assert "p%3Ass" not in repr(proxy)
    assert "YmFu" not in repr(proxy)
    assert Proxy.parse("proxy", "http://just-user@proxy.example.com:3128").headers == {
        "Proxy-Authorization": "Basic anVzdC11c2VyOg=="  # just-user:
    }
    assert Proxy.parse("proxy", "https://proxy.example.com").headers is None


def test_the_environment_proxy_is_decided_as_requests_decides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def route(url: str, **options: Any) -> str | None:
        settings = {"proxy": None, "trust_env": True} | options
        network = make_network(
            ca_bundle=None, client_cert=None, client_key=None, ssl_context=None,
            own_session=True, **settings,
        )  # fmt: skip
        proxy = network.proxy_for(url)
        return None if proxy is None else proxy.url

    assert route(API) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://u:p@corp-proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain-proxy:8080")
    assert route(API) == "http://corp-proxy:3128"
    assert route("http://127.0.0.1:8765") == "http://plain-proxy:8080"
    assert route(API, trust_env=False) is None
    assert route(API, proxy="http://given:1") == "http://given:1"
    monkeypatch.setenv("NO_PROXY", ".example.com,127.0.0.1")
    assert route(API) is None
    assert route("http://127.0.0.1:8765") is None
    assert route("https://api.other.test") == "http://corp-proxy:3128"
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://all-proxy:1080")
    assert route(API) == "http://all-proxy:1080"
    monkeypatch.setenv("ALL_PROXY", "socks5://all-proxy:1080")
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, API)
    assert list(excinfo.value.errors) == ["ALL_PROXY"]


def test_from_env_reads_the_network_variables(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("LOYALTYLAYER_BASE_URL", API)
    monkeypatch.setenv("LOYALTYLAYER_PROXY", "http://u:hunter2@proxy.example.com:3128")
    monkeypatch.setenv("LOYALTYLAYER_CA_BUNDLE", str(pki.ca))
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_KEY", str(pki.client_key))
    for make in (ll.AsyncLoyaltyLayer.from_env, ll.LoyaltyLayer.from_env):
        client: Any = make()
        transport = getattr(client, "_async", client)._transport
        assert transport._proxies[API].url == "http://proxy.example.com:3128"
        assert transport._network.presents_certificate
        assert "hunter2" not in repr(client)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_KEY", str(pki.other_key))
    with pytest.raises(ll.ConfigurationError, match="client_cert and client_key"):
        ll.AsyncLoyaltyLayer.from_env()
    monkeypatch.setenv("LOYALTYLAYER_CA_BUNDLE", "/nowhere")
    with pytest.raises(ll.ConfigurationError, match="ca_bundle: /nowhere does not exist"):
        ll.LoyaltyLayer.from_env()
    for name in ("CA_BUNDLE", "CLIENT_CERT", "CLIENT_KEY"):
        monkeypatch.delenv(f"LOYALTYLAYER_{name}")
    monkeypatch.setenv("LOYALTYLAYER_PROXY", "ftp://u:hunter2@proxy.example.com")
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer.from_env()
    assert "hunter2" not in str(excinfo.value)


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "8MiB"])
def test_max_response_bytes_is_a_positive_whole_number(size: object) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, API, max_response_bytes=size)  # type: ignore[arg-type]
    assert list(excinfo.value.errors) == ["max_response_bytes"]


def test_the_sandbox_refuses_network_options_in_the_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from loyaltylayer.cli._app import cli

    source = tmp_path / "in.csv"
    source.write_text("card_number,card_expiry,name_on_card,cvv,first_name,last_name,email\n"
                      "4111111111111111,12/39,ADA,123,Ada,Lovelace,ada@example.com\n")  # fmt: skip
    result = CliRunner().invoke(
        cli,
        ["enroll", str(source), "--plan-id", "pp-gold", "--sandbox", "--proxy", "http://p:1",
         "--out", str(tmp_path / "r.jsonl"), "--errors", str(tmp_path / "e.csv")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--sandbox runs a local sandbox: --proxy" in result.output
