"""Client authentication of the token request: client_secret_post, client_secret_basic and
private_key_jwt, on the wire (through a recording proxy) and at the sandbox."""

from __future__ import annotations

import base64
import json
import logging
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from recording_proxy import RecordingProxy
from sdk_env import CLIENT_ID, CLIENT_SECRET, fresh_interpreter, paths, running

import loyaltylayer as ll
from loyaltylayer.cli._app import cli
from loyaltylayer.sandbox import ClientRegistration, Fault, SandboxConfig, SandboxThread

BASIC_ID, BASIC_SECRET = "basic-client", "b@sic:sécret +%"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "Client authentication failed.",
    "code": 401,
}


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture(scope="module")
def config(rsa_key: RSAKey, ec_key: ECKey) -> SandboxConfig:
    return SandboxConfig(
        rate_key="off",
        seed=1,
        clients={CLIENT_ID: CLIENT_SECRET, BASIC_ID: BASIC_SECRET},
        registrations={
            BASIC_ID: ClientRegistration(token_auth_method="client_secret_basic"),
            "jwt-rsa": ClientRegistration(
                token_auth_method="private_key_jwt", public_key=rsa_key.as_pem(private=False)
            ),
            "jwt-ec": ClientRegistration(
                token_auth_method="private_key_jwt", public_key=ec_key.as_pem(private=False)
            ),
        },
    )


@pytest.fixture
def sandbox(config: SandboxConfig) -> Iterator[SandboxThread]:
    with SandboxThread(config) as server:
        yield server


@pytest.fixture
def proxy(sandbox: SandboxThread) -> Iterator[RecordingProxy]:
    with RecordingProxy(sandbox.base_url) as recording:
        yield recording


def _credentials(method: str, rsa_key: RSAKey, ec_key: ECKey) -> tuple[Any, ...]:
    """``(client_id, client_secret, keyword arguments)`` of a client using ``method``."""
    if method == "client_secret_post":
        return CLIENT_ID, CLIENT_SECRET, {}
    if method == "client_secret_basic":
        return BASIC_ID, BASIC_SECRET, {"token_auth_method": "client_secret_basic"}
    key = rsa_key if method == "jwt-rsa" else ec_key
    return method, None, {"private_key": key.as_pem(private=True)}


def _check_token_request(
    method: str, proxy: RecordingProxy, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    (seen,) = proxy.paths("/auth/token")
    body = json.loads(seen.body)
    if method == "client_secret_post":
        assert body == {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
        }
        assert "Authorization" not in seen.headers
    elif method == "client_secret_basic":
        assert body == {"grant_type": "client_credentials"}
        user_pass = f"{quote_plus(BASIC_ID, safe='')}:{quote_plus(BASIC_SECRET, safe='')}"
        assert seen.headers["Authorization"] == (
            "Basic " + base64.b64encode(user_pass.encode()).decode()
        )
    else:
        assert set(body) == {"client_id", "client_assertion_type", "client_assertion", "grant_type"}
        assert (body["client_id"], body["client_assertion_type"]) == (method, ASSERTION_TYPE)
        key = rsa_key if method == "jwt-rsa" else ec_key
        token = jwt.decode(body["client_assertion"], key, algorithms=["RS256", "ES256"])
        assert token.header["alg"] == ("RS256" if method == "jwt-rsa" else "ES256")
        claims = token.claims
        assert (claims["iss"], claims["sub"], claims["aud"]) == (
            method,
            method,
            f"{proxy.url}/auth/token",
        )
        assert claims["exp"] - claims["iat"] == 300
        assert len(claims["jti"]) >= 32
        assert "Authorization" not in seen.headers


METHODS = ["client_secret_post", "client_secret_basic", "jwt-rsa", "jwt-ec"]


@pytest.mark.parametrize("method", METHODS)
async def test_each_method_authenticates_as_its_rfc_says(
    method: str, sandbox: SandboxThread, proxy: RecordingProxy, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    client_id, secret, options = _credentials(method, rsa_key, ec_key)
    async with ll.AsyncLoyaltyLayer(client_id, secret, proxy.url, **options) as client:
        keys = await client.cards.encryption_keys()
    assert len(keys.keys) == 1
    _check_token_request(method, proxy, rsa_key, ec_key)
    assert [(e.path, e.status, e.client_id) for e in sandbox.journal()] == [
        ("/auth/token", 200, client_id),
        ("/v1/card/encryption-keys", 200, client_id),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_authenticates_the_sync_client_too(
    method: str,
    sandbox: SandboxThread,
    proxy: RecordingProxy,
    rsa_key: RSAKey,
    ec_key: ECKey,
    tmp_path: Path,
) -> None:
    client_id, secret, options = _credentials(method, rsa_key, ec_key)
    if "private_key" in options:  # the key as a file this time
        (tmp_path / "key.pem").write_bytes(options["private_key"])
        options["private_key"] = tmp_path / "key.pem"
    with ll.LoyaltyLayer(client_id, secret, proxy.url, **options) as client:
        assert len(client.cards.encryption_keys().keys) == 1
    _check_token_request(method, proxy, rsa_key, ec_key)


AUTHLIB_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from joserfc.jwk import RSAKey
    import loyaltylayer as ll
    from loyaltylayer.sandbox import ClientRegistration, SandboxConfig, SandboxThread

    key = RSAKey.generate_key(2048)
    config = SandboxConfig(
        rate_key="off",
        clients={"basic-client": "b-secret"},
        registrations={
            "basic-client": ClientRegistration(token_auth_method="client_secret_basic"),
            "jwt-rsa": ClientRegistration(
                token_auth_method="private_key_jwt", public_key=key.as_pem(private=False)
            ),
        },
    )

    async def one_token_each(url):
        basic = ll.AsyncLoyaltyLayer(
            "basic-client", "b-secret", url, token_auth_method="client_secret_basic"
        )
        signed = ll.AsyncLoyaltyLayer("jwt-rsa", None, url, private_key=key.as_pem(private=True))
        async with basic, signed:
            return [len((await c.cards.encryption_keys()).keys) for c in (basic, signed)]

    with SandboxThread(config) as sandbox:
        keys = asyncio.run(one_token_each(sandbox.base_url))
    print(json.dumps({"keys": keys, "authlib": sorted(m for m in sys.modules if "authlib" in m)}))
    """
)


def test_authlib_authenticates_without_its_deprecated_jose() -> None:
    out = fresh_interpreter(AUTHLIB_PROBE)
    assert out["keys"] == [1, 1]
    assert {"authlib.oauth2.auth", "authlib.oauth2.rfc7523"} <= set(out["authlib"])
    assert [m for m in out["authlib"] if m.startswith("authlib.jose")] == []


async def test_every_attempt_signs_a_new_assertion(config: SandboxConfig, rsa_key: RSAKey) -> None:
    # The first token request is processed, then its reply is lost: the retry must not replay
    # the assertion the server has already seen (a replayed jti is refused).
    async with running(config, max_retries=2) as (sandbox, _client):
        sandbox.add_fault(Fault(route="/auth/token", kind="commit_then_drop", times=1))
        async with ll.AsyncLoyaltyLayer(
            "jwt-rsa", None, sandbox.base_url, private_key=rsa_key.as_pem(private=True)
        ) as client:
            await client.cards.encryption_keys()
        tokens = paths(sandbox.journal(), "/auth/token")
    assert [(e.status, e.fault, e.client_id) for e in tokens] == [
        (200, "commit_then_drop", "jwt-rsa"),
        (200, None, "jwt-rsa"),
    ]


def _assertion(key: RSAKey, token_url: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "jwt-rsa",
        "sub": "jwt-rsa",
        "aud": token_url,
        "iat": now,
        "exp": now + 300,
        "jti": f"jti-{time.perf_counter_ns()}",
    } | claims
    return jwt.encode({"alg": "RS256"}, {k: v for k, v in payload.items() if v is not None}, key)


def _jwt_body(assertion: str, **extra: Any) -> dict[str, Any]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion} | extra


async def _token_reply(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/auth/token", json=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json(), reply.headers.get("WWW-Authenticate")


def _basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


async def test_every_failure_answers_the_guides_invalid_client(
    sandbox: SandboxThread, rsa_key: RSAKey
) -> None:
    url, token_url = sandbox.base_url, f"{sandbox.base_url}/auth/token"
    other_key = RSAKey.generate_key(2048)
    grant = {"grant_type": "client_credentials"}
    replayed = _assertion(rsa_key, token_url, jti="once")
    assert (await _token_reply(url, _jwt_body(replayed)))[0] == 200
    refused = {
        "wrong secret": ({"client_id": CLIENT_ID, "client_secret": "nope"} | grant, None),
        "basic client posting": ({"client_id": BASIC_ID, "client_secret": BASIC_SECRET}, None),
        "post client with basic": (grant, _basic(CLIENT_ID, CLIENT_SECRET)),
        "unknown client": ({"client_id": "who", "client_secret": "x"}, None),
        "another key": (_jwt_body(_assertion(other_key, token_url)), None),
        "wrong audience": (_jwt_body(_assertion(rsa_key, "https://elsewhere/auth/token")), None),
        "expired": (_jwt_body(_assertion(rsa_key, token_url, exp=int(time.time()) - 120)), None),
        "no exp": (_jwt_body(_assertion(rsa_key, token_url, exp=None)), None),
        "no jti": (_jwt_body(_assertion(rsa_key, token_url, jti=None)), None),
        "replayed jti": (_jwt_body(replayed), None),
        "iss is not sub": (_jwt_body(_assertion(rsa_key, token_url, iss="jwt-ec")), None),
        "client_id is not sub": (
            _jwt_body(_assertion(rsa_key, token_url), client_id="jwt-ec"),
            None,
        ),
        "jwt for a secret client": (
            _jwt_body(_assertion(rsa_key, token_url, iss=CLIENT_ID, sub=CLIENT_ID)),
            None,
        ),
        "other assertion type": (
            _jwt_body(_assertion(rsa_key, token_url)) | {"client_assertion_type": "saml"},
            None,
        ),
        "not a jwt": (_jwt_body("not.a.jwt"), None),
    }
    for case, (body, headers) in refused.items():
        status, answer, challenge = await _token_reply(url, body, headers)
        answer.pop("correlation_id")
        assert (case, status, answer) == (case, 401, INVALID_CLIENT)
        assert (case, challenge) == (case, 'Basic realm="loyaltylayer"' if headers else None)
    ok = await _token_reply(url, grant, _basic(BASIC_ID, BASIC_SECRET))
    assert ok[0] == 200
    status, answer, _ = await _token_reply(
        url, grant | {"client_secret": BASIC_SECRET}, _basic(BASIC_ID, BASIC_SECRET)
    )
    assert (status, answer["error"], answer["fields"]) == (
        400,
        "invalid_request",
        {"client_authentication": "use exactly one method"},
    )


async def test_a_refused_key_raises_authentication_error_with_nothing_else_sent(
    sandbox: SandboxThread,
) -> None:
    stranger = RSAKey.generate_key(2048).as_pem(private=True)
    async with ll.AsyncLoyaltyLayer("jwt-rsa", None, sandbox.base_url, private_key=stranger) as c:
        with pytest.raises(ll.AuthenticationError) as caught:
            await c.cards.encryption_keys()
    assert (caught.value.status, caught.value.error) == (401, "invalid_client")
    assert [e.path for e in sandbox.journal()] == ["/auth/token"]


def _pem(key: Any, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


@pytest.fixture(scope="module")
def weak_key() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize(
    ("secret", "options", "errors"),
    [
        (
            CLIENT_SECRET,
            {"token_auth_method": "password"},
            {
                "token_auth_method": (
                    "must be one of client_secret_post, client_secret_basic, private_key_jwt"
                )
            },
        ),
        (
            CLIENT_SECRET,
            {"token_auth_method": "client_secret_basic", "private_key": b"x"},
            {"private_key": "is for token_auth_method='private_key_jwt'"},
        ),
        (None, {}, {"client_secret": "must be a non-empty string"}),
        (
            None,
            {"token_auth_method": "private_key_jwt"},
            {"private_key": "is required for private_key_jwt"},
        ),
        (
            CLIENT_SECRET,
            {"private_key": "RSA"},
            {
                "client_secret": ("must be None with private_key_jwt: the private key replaces it"),
                "private_key": "cannot read the key file (No such file or directory)",
            },
        ),
        (
            None,
            {"private_key": b"-----BEGIN nonsense"},
            {"private_key": "is not a PEM private key"},
        ),
        (None, {"private_key": "PUBLIC"}, {"private_key": "is not a PEM private key"}),
        (
            None,
            {"private_key": "ENCRYPTED"},
            {"private_key": "is encrypted: give the key unencrypted (protect the file instead)"},
        ),
        (
            None,
            {"private_key": "WEAK"},
            {
                "private_key": (
                    "must be an RSA key of 2048 bits or more, or an EC key on P-256/384/521"
                )
            },
        ),
        (
            None,
            {"private_key": 42},
            {"private_key": "must be PEM bytes or text, or the path of a PEM file"},
        ),
    ],
    ids=[
        "method",
        "key-with-basic",
        "no-secret",
        "no-key",
        "secret-and-missing-file",
        "not-pem",
        "public-key",
        "encrypted",
        "weak",
        "wrong-type",
    ],
)
def test_bad_authentication_arguments_name_the_field_and_never_the_key(
    secret: str | None,
    options: dict[str, Any],
    errors: dict[str, str],
    rsa_key: RSAKey,
    weak_key: bytes,
    tmp_path: Path,
) -> None:
    stand_ins = {
        "RSA": str(tmp_path / "missing.pem"),
        "PUBLIC": rsa_key.as_pem(private=False).decode(),
        "ENCRYPTED": _pem(
            serialization.load_pem_private_key(rsa_key.as_pem(private=True), None), b"pw"
        ),
        "WEAK": weak_key,
    }
    if isinstance(options.get("private_key"), str):
        options = options | {"private_key": stand_ins[options["private_key"]]}
    with pytest.raises(ll.ValidationError) as caught:
        ll.AsyncLoyaltyLayer("jwt-rsa", secret, "https://api.example.com", **options)
    assert caught.value.errors == errors
    assert "BEGIN" not in str(caught.value)
    assert str(tmp_path) not in str(caught.value)


async def test_no_secret_key_or_assertion_in_reprs_or_logs(
    sandbox: SandboxThread, rsa_key: RSAKey, caplog: pytest.LogCaptureFixture
) -> None:
    pem = rsa_key.as_pem(private=True)
    caplog.set_level(logging.DEBUG, logger="loyaltylayer")
    clients = [
        ll.AsyncLoyaltyLayer("jwt-rsa", None, sandbox.base_url, private_key=pem),
        ll.AsyncLoyaltyLayer(
            BASIC_ID, BASIC_SECRET, sandbox.base_url, token_auth_method="client_secret_basic"
        ),
    ]
    for client in clients:
        async with client:
            await client.cards.encryption_keys()
    shown = caplog.text + "".join(
        repr(thing) for c in clients for thing in (c, c._transport, c._transport._client_auth)
    )
    basic = _basic(BASIC_ID, BASIC_SECRET)["Authorization"].split()[1]
    for secret in (BASIC_SECRET, basic, "BEGIN", "eyJ0eXAi", "eyJhbGci", "sbx_at_"):
        assert secret not in shown
    assert "jwt-rsa" in shown  # the client id is no secret


def test_from_env_reads_the_method_and_the_key(
    sandbox: SandboxThread, rsa_key: RSAKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(rsa_key.as_pem(private=True))
    monkeypatch.setenv("LOYALTYLAYER_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", BASIC_ID)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", BASIC_SECRET)
    monkeypatch.setenv("LOYALTYLAYER_TOKEN_AUTH_METHOD", "client_secret_basic")
    with ll.LoyaltyLayer.from_env() as client:
        client.cards.encryption_keys()
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", "jwt-rsa")
    monkeypatch.delenv("LOYALTYLAYER_TOKEN_AUTH_METHOD")
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", "left over, unused")
    for key in (str(key_file), rsa_key.as_pem(private=True).decode()):  # a path, or the PEM
        monkeypatch.setenv("LOYALTYLAYER_PRIVATE_KEY", key)
        with ll.LoyaltyLayer.from_env() as client:
            client.cards.encryption_keys()
    monkeypatch.setenv("LOYALTYLAYER_TOKEN_AUTH_METHOD", "magic")
    with pytest.raises(ll.ValidationError) as caught:
        ll.LoyaltyLayer.from_env()
    assert set(caught.value.errors) == {"token_auth_method"}
    assert [e.client_id for e in paths(sandbox.journal(), "/auth/token")] == [
        BASIC_ID,
        "jwt-rsa",
        "jwt-rsa",
    ]


def test_the_cli_takes_a_key_file_for_every_command_that_calls_the_api(
    sandbox: SandboxThread, rsa_key: RSAKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(rsa_key.as_pem(private=True))
    env = {
        "LOYALTYLAYER_CLIENT_ID": "jwt-rsa",
        "LOYALTYLAYER_CLIENT_SECRET": None,
        "LOYALTYLAYER_PRIVATE_KEY": None,
        "LOYALTYLAYER_BASE_URL": sandbox.base_url,
    }
    runner = CliRunner()
    ok = runner.invoke(cli, ["token", "--private-key", str(key_file)], env=env)
    assert (ok.exit_code, ok.output) == (
        0,
        f"Credentials OK: jwt-rsa got an access token from {sandbox.base_url} "
        "(not shown) and 1 card encryption key(s).\n",
    )
    status = runner.invoke(cli, ["pass", "status", "nope", "--private-key", str(key_file)], env=env)
    assert status.exit_code == 1
    assert "invalid_pass_id" in status.output
    assert [e.client_id for e in paths(sandbox.journal(), "/v1/pass/status")] == ["jwt-rsa"]

    pem = rsa_key.as_pem(private=True).decode()
    for command in (["token"], ["pass", "cancel", "p1"], ["enroll", "in.csv", "--plan-id", "p"]):
        refused = runner.invoke(cli, [*command, "--private-key", pem], env=env)
        assert refused.exit_code == 2, command
        assert "never the key itself" in refused.output
        assert pem.splitlines()[1] not in refused.output
    missing = runner.invoke(cli, ["token", "--private-key", str(tmp_path / "none.pem")], env=env)
    assert missing.exit_code == 3
    assert "private_key: cannot read the key file (No such file or directory)" in missing.output


@pytest.mark.parametrize(
    ("registration", "message"),
    [
        (
            {"token_auth_method": "private_key_jwt"},
            "ClientRegistration.public_key is for private_key_jwt, and it needs one",
        ),
        (
            {"token_auth_method": "tls_client_auth"},
            "ClientRegistration.token_auth_method must be one of client_secret_post, "
            "client_secret_basic, private_key_jwt",
        ),
        (
            {"token_auth_method": "private_key_jwt", "public_key": "junk"},
            "ClientRegistration.public_key must be an RSA or EC public key in PEM",
        ),
        (
            {"token_auth_method": "client_secret_basic"},
            "SandboxConfig.registrations: 'nobody' authenticates with a secret, and has none in "
            "SandboxConfig.clients",
        ),
    ],
    ids=["jwt-without-key", "unknown-method", "bad-key", "secret-without-secret"],
)
def test_a_bad_registration_is_refused_when_the_sandbox_is_configured(
    registration: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        SandboxConfig(registrations={"nobody": ClientRegistration(**registration)})
