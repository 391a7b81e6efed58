"""The packaged OpenAPI document: valid, sourced, its examples true, its limits the SDK's own,
its token request every form the SDK sends, its rate-limit headers the ones the SDK reads;
served by the sandbox and printed by its command line exactly as shipped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from openapi_spec_validator import validate
from openapi_support import load_spec, operations, resolve, strict_responses

from loyaltylayer import _rules
from loyaltylayer._cardmath import CARD_TYPES
from loyaltylayer._client_auth import TOKEN_AUTH_METHODS
from loyaltylayer._models import PassStatus
from loyaltylayer._ratelimit import ServerBudget, server_budget
from loyaltylayer.cli._app import cli
from loyaltylayer.sandbox import Sandbox, SandboxConfig
from loyaltylayer.sandbox._cli import main as sandbox_main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "loyaltylayer"
SOURCES = {"guide", "contract"}
SPEC = load_spec()
SCHEMAS = SPEC["components"]["schemas"]
STRICT = strict_responses(SPEC)
RATE_LIMIT_HEADERS = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


def test_the_document_is_valid_openapi_3_1_and_the_json_is_the_yaml() -> None:
    from_yaml = yaml.safe_load((PACKAGE / "openapi.yaml").read_text(encoding="utf-8"))
    validate(from_yaml)
    assert from_yaml == SPEC
    assert SPEC["openapi"] == "3.1.0"


def test_the_json_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_openapi.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_json_is_reported_with_the_fix(tmp_path: Path) -> None:
    for name in ("openapi.yaml", "openapi.json"):
        shutil.copy(PACKAGE / name, tmp_path / name)
    source = tmp_path / "openapi.yaml"
    source.write_text(source.read_text().replace('version: "1"', 'version: "2"'))
    command = [sys.executable, str(ROOT / "tools/gen_openapi.py"), "--package", str(tmp_path)]
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert '-    "version": "1",' in stale.stderr
    assert "openapi.json is out of date; run: python tools/gen_openapi.py" in stale.stderr
    assert subprocess.run(command, check=False).returncode == 0
    assert json.loads((tmp_path / "openapi.json").read_text())["info"]["version"] == "2"


def _sourced_nodes() -> list[tuple[str, dict[str, Any]]]:
    """Everything that must say where it comes from: operations, request bodies, responses,
    parameters, headers, links, examples, schemas and each property of a schema."""
    nodes: list[tuple[str, dict[str, Any]]] = []
    for path, method, operation in operations(SPEC):
        where = f"{method.upper()} {path}"
        nodes.append((where, operation))
        body = operation.get("requestBody")
        if body is not None:
            nodes.append((f"{where} requestBody", body))
        for status, response in operation["responses"].items():
            if "$ref" not in response:
                nodes.append((f"{where} {status}", response))
                nodes += _inline_headers(f"{where} {status}", response)
    components = SPEC["components"]
    for name, response in components["responses"].items():
        nodes += _inline_headers(f"responses/{name}", response)
    for kind in ("parameters", "headers", "links", "responses", "securitySchemes"):
        nodes += [(f"{kind}/{name}", node) for name, node in components[kind].items()]
    for name, schema in SCHEMAS.items():
        nodes.append((f"schemas/{name}", schema))
        parts = [schema, *schema.get("allOf", [])]
        for part in parts:
            for prop, node in part.get("properties", {}).items():
                if "$ref" not in node:
                    nodes.append((f"schemas/{name}.{prop}", node))

    def examples(where: str, node: Any) -> None:
        if isinstance(node, dict):
            named = node.get("examples")  # a map in OpenAPI objects, a list in schemas
            for name, example in named.items() if isinstance(named, dict) else ():
                nodes.append((f"{where} example {name}", example))
            for key, value in node.items():
                examples(f"{where}/{key}", value)

    examples("paths", SPEC["paths"])
    examples("components", components)
    return nodes


def _inline_headers(where: str, response: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A response's headers written out in it (not references to a component header)."""
    headers = response.get("headers", {}).items()
    return [(f"{where} header {name}", node) for name, node in headers if "$ref" not in node]


def test_every_operation_field_and_example_says_whether_it_is_the_guide_or_this_reading() -> None:
    nodes = _sourced_nodes()
    assert len(nodes) > 150
    unsourced = [where for where, node in nodes if node.get("x-source") not in SOURCES]
    assert unsourced == []


def _examples() -> list[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example value) for every request and response example."""
    found = []
    for path, method, operation in operations(SPEC):
        bodies = [("request", operation.get("requestBody"))]
        bodies += [(status, resolve(SPEC, r)) for status, r in operation["responses"].items()]
        for label, body in bodies:
            for media in (body or {}).get("content", {}).values():
                for name, example in media.get("examples", {}).items():
                    where = f"{method.upper()} {path} {label} {name}"
                    found.append((where, media["schema"], example["value"]))
    return found


@pytest.mark.parametrize(("where", "schema", "value"), _examples(), ids=lambda v: str(v)[:60])
def test_every_example_is_valid_against_its_schema(
    where: str, schema: dict[str, Any], value: Any
) -> None:
    """Reply examples strictly (a field no schema names is an error, as in the sandbox's
    replies), the pass replies' examples included."""
    if where.startswith("POST /v1/card/tokenize request"):
        assert re.fullmatch(r"[\w-]+(\.[\w-]*){4}", value["encrypted_value"])
    document = {**schema, "components": STRICT["components"]}
    jsonschema.Draft202012Validator(
        document, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(value)


def test_every_success_reply_has_an_example() -> None:
    """The 200 of every operation (the pass replies of create, status, update and cancel
    included) shows a body, which the test above validates."""
    missing = [
        f"{method.upper()} {path}"
        for path, method, operation in operations(SPEC)
        for media in resolve(SPEC, operation["responses"]["200"])["content"].values()
        if not media.get("examples")
    ]
    assert missing == []
    passes = [where for where, _, value in _examples() if " 200 " in where and "pass_id" in value]
    assert len(passes) == 4, passes


def test_the_token_request_has_a_form_and_an_example_for_each_sdk_auth_method() -> None:
    """``client_secret_post``, ``client_secret_basic`` and ``private_key_jwt``, as
    ``loyaltylayer._client_auth`` sends them; Basic is a security scheme of the operation."""
    operation = SPEC["paths"]["/auth/token"]["post"]
    forms = [resolve(SPEC, form) for form in SCHEMAS["TokenRequest"]["oneOf"]]
    assert [form["title"] for form in forms] == list(TOKEN_AUTH_METHODS)
    media = operation["requestBody"]["content"]["application/json"]
    assert list(media["examples"]) == list(TOKEN_AUTH_METHODS)
    for form, example in zip(forms, media["examples"].values(), strict=True):
        validator = jsonschema.Draft202012Validator({**form, "components": SPEC["components"]})
        assert validator.is_valid(example["value"]), form["title"]
    assert operation["security"] == [{}, {"basicAuth": []}]
    scheme = SPEC["components"]["securitySchemes"]["basicAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_every_response_documents_the_rate_limit_headers_the_sdk_reads() -> None:
    """The sandbox sends them on every answer when asked to (``rate_headers``), so every
    response documents them, optional; and they are the names ``server_budget`` reads."""
    missing = [
        f"{method.upper()} {path} {status}"
        for path, method, operation in operations(SPEC)
        for status, response in operation["responses"].items()
        if not set(RATE_LIMIT_HEADERS) <= set(resolve(SPEC, response)["headers"])
    ]
    assert missing == []
    headers = {name: SPEC["components"]["headers"][name] for name in RATE_LIMIT_HEADERS}
    assert [header.get("required", False) for header in headers.values()] == [False] * 3
    budget = server_budget(dict(zip(RATE_LIMIT_HEADERS, ["100", "0", "42"], strict=True)))
    assert budget == ServerBudget(limit=100, remaining=0, reset=42.0)


def test_the_guides_error_bodies_are_the_examples_verbatim() -> None:
    bodies = {
        json.dumps(value, sort_keys=True) for where, _, value in _examples() if " 200 " not in where
    }
    guide = [
        {"error": "invalid_enrol_token", "error_description": "Provided enrol_token is invalid or expired", "code": 400},  # noqa: E501
        {"error": "invalid_client", "error_description": "Client authentication failed.", "code": 401},  # noqa: E501
        {"error": "unauthorized", "error_description": "Missing or invalid Authorization header.", "code": 401},  # noqa: E501
        {"error": "invalid_token", "error_description": "Access token is invalid or expired.", "code": 401},  # noqa: E501
        {"error": "invalid_pass_id", "error_description": "Invalid pass ID", "code": 404},
        {"error": "already_cancelled", "error_description": "Pass {pass_id} is already cancelled.", "code": 409},  # noqa: E501
        {"error": "rate_limit_exceeded", "error_description": "Retry after 60 seconds", "code": 429, "retry_after": 60},  # noqa: E501
        {"error": "server_error", "error_description": "Unexpected error; try again", "code": 500},
        {"error": "server_error", "error_description": "Provider operation failed.", "code": 502},
        {"error": "provider_timeout", "error_description": "Provider operation failed.", "code": 504},  # noqa: E501
    ]  # fmt: skip
    assert [body for body in guide if json.dumps(body, sort_keys=True) not in bodies] == []


def _whitespace_class() -> str:
    match = re.fullmatch(r"\[\^(.*)\]", SCHEMAS["Name"]["pattern"])
    assert match is not None
    return match.group(1)


def test_the_spec_limits_are_the_sdk_rules() -> None:
    """The spec and ``loyaltylayer._rules`` (which the SDK and the sandbox check with) agree."""
    assert SCHEMAS["Country"]["enum"] == [*sorted(_rules.COUNTRIES), None]
    assert SCHEMAS["TokenizeRequest"]["properties"]["card_type"]["examples"] == list(CARD_TYPES)
    statuses = SCHEMAS["PassCommon"]["properties"]["status"]["examples"]
    assert statuses == [status.value for status in PassStatus]
    assert SCHEMAS["BatchCreateRequest"]["properties"]["passes"]["maxItems"] == _rules.MAX_BATCH
    assert SCHEMAS["Name"]["maxLength"] == _rules.NAME_MAX
    assert SCHEMAS["Email"]["maxLength"] == _rules.EMAIL_MAX
    assert SCHEMAS["Reference"]["maxLength"] == _rules.REFERENCE_MAX
    assert SCHEMAS["Metadata"]["maxProperties"] == _rules.METADATA_MAX_PAIRS
    key = SPEC["components"]["parameters"]["IdempotencyKey"]["schema"]
    assert key["maxLength"] == _rules.IDEMPOTENCY_KEY_MAX


def test_the_patterns_whitespace_is_pythons() -> None:
    """ECMA-262's ``\\s`` is not Python's (``\\x1c`` is whitespace only to Python, ``\\ufeff``
    only to ECMA), so the spec spells out the characters ``str.isspace`` and ``str.strip``
    treat as whitespace, which the sandbox's checks use."""
    spelled = re.compile(f"[{_whitespace_class()}]")
    python = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert {chr(c) for c in range(sys.maxunicode + 1) if spelled.match(chr(c))} == python
    assert _whitespace_class() in SCHEMAS["Email"]["pattern"]


async def test_the_sandbox_serves_the_document_to_anyone_unlimited_unjournaled() -> None:
    async with (
        Sandbox(SandboxConfig(rate_limit=1, seed=1)) as sb,
        aiohttp.ClientSession() as session,
    ):
        url = sb.base_url + "/openapi.json"
        for _ in range(3):
            async with session.get(url) as reply:
                assert reply.status == 200
                assert reply.content_type == "application/json"
                assert await reply.json() == SPEC
        async with session.head(url) as reply:
            assert reply.status == 200
            assert await reply.read() == b""
        async with session.post(url, json={}) as reply:
            assert reply.status == 405
            assert reply.headers["Allow"] == "GET, HEAD"
            assert (await reply.json())["error"] == "method_not_allowed"
        body = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}
        async with session.post(sb.base_url + "/auth/token", json=body) as reply:
            assert reply.status == 200  # the first request the rate limit of 1 counted
        assert [entry.path for entry in sb.journal()] == ["/auth/token"]


def test_print_openapi_writes_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert sandbox_main(["--print-openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == SPEC
    assert sandbox_main(["--print-openapi", "yaml"]) == 0
    assert capsys.readouterr().out == (PACKAGE / "openapi.yaml").read_text(encoding="utf-8")


def test_loyaltylayer_sandbox_print_openapi() -> None:
    result = CliRunner().invoke(cli, ["sandbox", "--print-openapi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == SPEC
    result = CliRunner().invoke(cli, ["sandbox", "--print-openapi", "xml"])
    assert result.exit_code == 2
    assert "invalid choice: 'xml' (choose from 'json', 'yaml')" in result.output
