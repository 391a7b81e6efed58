"""The SDK's models agree with the OpenAPI document, both ways.

Replies: every response schema is read into a model (or, named below with the reason, by the
transport); every property the spec names is an attrs field of that model, typed to hold what
the spec allows (a nullable property is Optional, a property the spec does not require has a
default), and the public readers ``structure``/``structure_pass`` read it (nothing the spec
names lands in ``extra``). Requests: every body the SDK sends, and the card it encrypts, uses
only fields the spec names, and every header it sends is a parameter or security scheme of the
operation, with each client authentication method of the token request. A model field renamed
or a spec field added fails here.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
import jsonschema
import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey
from openapi_support import (
    BASIC_ID,
    BASIC_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    JWT_ID,
    JWT_KEY,
    TOKEN,
    client_auth_config,
    load_spec,
    operations,
    resolve,
    response_schema_names,
)

import loyaltylayer as ll
from loyaltylayer._auth import IssuedToken
from loyaltylayer._client_auth import TOKEN_AUTH_METHODS
from loyaltylayer._convert import PASS_TYPES, structure, structure_pass
from loyaltylayer._errors import status_error
from loyaltylayer._models import (
    BatchItem,
    CardToken,
    EncryptionKey,
    EncryptionKeySet,
    EsimPass,
    Holder,
    LoungeKeyPass,
    Pass,
    PriorityPass,
    UnknownPass,
)
from loyaltylayer.sandbox import Sandbox, SandboxConfig

SPEC = load_spec()
SCHEMAS = SPEC["components"]["schemas"]

READ_AS: dict[str, type[Any]] = {
    "JsonWebKeySet": EncryptionKeySet,
    "JsonWebKey": EncryptionKey,
    "CardToken": CardToken,
    "Holder": Holder,
    "PassCommon": Pass,
    "PriorityPass": PriorityPass,
    "LoungeKeyPass": LoungeKeyPass,
    "EsimPass": EsimPass,
    "OtherPass": UnknownPass,
}
"""Each response schema and the attrs model the SDK reads it into."""

READ_BY_NAME: dict[str, tuple[type[Any], dict[str, str]]] = {
    "TokenResponse": (
        IssuedToken,
        {"access_token": "access_token", "expires_in": "expires_in", "token_type": ""},
    ),
    "BatchCreated": (
        BatchItem,
        {"index": "index", "pass": "pass_", "replayed": "replayed", "status": ""},
    ),
    "BatchFailed": (BatchItem, {"index": "index", "error": "error", "status": ""}),
}
"""Response schemas the SDK reads key by key (the transport, ``passes.batch_create``): each
property and the field it fills; "" marks one read but not kept. ``token_type`` is always
``Bearer``, which the SDK sends whatever it says; a batch result's ``status`` says which of
``pass_`` and ``error`` is set."""

NOT_A_MODEL = {
    "Pass": "a oneOf of the pass schemas above, chosen by the type (structure_pass)",
    "BatchResult": "a oneOf of BatchCreated and BatchFailed",
    "BatchCreateResponse": "its results become BatchItems; created and failed are counted "
    "again from them (BatchResult.created / .failed)",
    "Error": "read into the APIStatusError family: test_error_bodies_are_read",
}

KEPT_IN_EXTRA: dict[tuple[str, str], str] = {}
"""(schema, property) the SDK keeps in ``extra`` on purpose, with the reason. None today."""

CLIENT_SIDE = {"extra", "raw", "idempotency_key", "replayed"}
"""Model fields that do not come from the reply body (``replayed`` of a pass comes from the
``Idempotent-Replayed`` header; that of a batch item is read by name above)."""

SAMPLE_DATETIME = "2026-11-02T10:15:00Z"
SAMPLE_DATE = "2026-12-31"


def _properties(name: str) -> tuple[dict[str, Any], set[str]]:
    """A schema's properties and required names, its ``allOf`` parts merged in order."""
    schema = SCHEMAS[name]
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for part in [schema, *schema.get("allOf", [])]:
        part = resolve(SPEC, part)
        if "allOf" in part and part is not schema:
            inner = next(k for k, v in SCHEMAS.items() if v is part)
            more, needed = _properties(inner)
            properties.update(more)
            required |= needed
        properties.update(part.get("properties", {}))
        required |= set(part.get("required", []))
    return properties, required


def _json_types(node: Any) -> set[str]:
    node = resolve(SPEC, node)
    if "const" in node:
        return {"string"}
    if "$ref" in node or "oneOf" in node or "properties" in node or "allOf" in node:
        return {"object"}
    kinds = node.get("type", "string")
    return set(kinds) if isinstance(kinds, list) else {kinds}


def _accepted(hint: Any) -> tuple[set[Any], bool]:
    """The types a field's annotation holds, and whether it holds None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return {arg for arg in args if arg is not type(None)}, type(None) in args


def _holds(hint_types: set[Any], prop: dict[str, Any]) -> bool:
    """Whether a field of these types can hold every non-null value the spec allows."""
    node = resolve(SPEC, prop)
    for kind in _json_types(prop) - {"null"}:
        wanted: tuple[type[Any], ...]
        if kind == "string":
            wanted = {"date-time": (dt.datetime,), "date": (dt.date,)}.get(
                node.get("format", ""), (str,)
            )
        elif kind == "integer":
            wanted = (int,)
        elif kind == "boolean":
            wanted = (bool,)
        elif kind == "array":
            wanted = (list,)
        elif "$ref" in prop or "oneOf" in node:
            target = prop["$ref"].rsplit("/", 1)[1] if "$ref" in prop else ""
            wanted = (READ_AS.get(target, dict), Pass)
        else:
            wanted = (Mapping,)
        if not any(
            (isinstance(t, type) and issubclass(t, wanted)) or typing.get_origin(t) in wanted
            for t in hint_types
        ):
            return False
    return True


@pytest.mark.parametrize("name", sorted(response_schema_names(SPEC)))
def test_every_response_schema_is_read(name: str) -> None:
    assert (name in READ_AS) + (name in READ_BY_NAME) + (name in NOT_A_MODEL) == 1


@pytest.mark.parametrize(("name", "model"), READ_AS.items(), ids=list(READ_AS))
def test_every_field_the_spec_names_is_a_model_field_typed_to_hold_it(
    name: str, model: type[Any]
) -> None:
    properties, required = _properties(name)
    fields = {field.name: field for field in attrs.fields(model) if field.name not in CLIENT_SIDE}
    hints = typing.get_type_hints(model)
    named = set(properties) - {prop for schema, prop in KEPT_IN_EXTRA if schema == name}
    assert sorted(named - set(fields)) == [], "the spec names them, the model has no field"
    assert sorted(set(fields) - set(properties)) == [], "the model reads them, the spec has none"
    for prop in named:
        hint_types, optional = _accepted(hints[prop])
        where = f"{name}.{prop} -> {model.__name__}.{prop}: {hints[prop]}"
        assert _holds(hint_types, properties[prop]), f"{where} cannot hold {properties[prop]}"
        if "null" in _json_types(properties[prop]):
            assert optional, f"{where}: the spec allows null"
        if fields[prop].default is attrs.NOTHING:
            assert prop in required, f"{where}: required by the model, optional in the spec"


@pytest.mark.parametrize(("name", "read"), READ_BY_NAME.items(), ids=list(READ_BY_NAME))
def test_every_field_of_a_reply_read_by_name_is_read(
    name: str, read: tuple[type[Any], dict[str, str]]
) -> None:
    model, into = read
    properties, _ = _properties(name)
    assert sorted(properties) == sorted(into)
    fields = {field.name for field in attrs.fields(model)}
    assert sorted({target for target in into.values() if target} - fields) == []


def _sample(prop: dict[str, Any], *, nulls: bool) -> Any:
    """A value the spec allows for ``prop``: null where allowed and ``nulls``, else the
    richest one (every optional property present)."""
    node = resolve(SPEC, prop)
    if "const" in node:
        return node["const"]
    kinds = _json_types(prop)
    if nulls and "null" in kinds:
        return None
    if ("$ref" in prop and "properties" in node) or "allOf" in node:
        name = prop["$ref"].rsplit("/", 1)[1] if "$ref" in prop else ""
        return _sample_object(name, nulls=nulls)
    if "array" in kinds:
        return [_sample(node["items"], nulls=nulls)]
    if "object" in kinds:
        return {"branch": "north"}
    if "integer" in kinds:
        return max(node.get("minimum", 0), 4)
    fmt = node.get("format")
    if fmt == "date-time":
        return SAMPLE_DATETIME
    if fmt == "date":
        return SAMPLE_DATE
    return "x"


def _sample_object(name: str, *, nulls: bool) -> dict[str, Any]:
    properties, _ = _properties(name)
    sample = {prop: _sample(node, nulls=nulls) for prop, node in properties.items()}
    if name == "OtherPass":
        sample["type"] = "hotel_night"
    return sample


def _context() -> dict[str, Any]:
    return {"status": 200, "method": "POST", "path": "/v1/pass/status", "correlation_id": None}


def _read(name: str, sample: dict[str, Any]) -> Any:
    model = READ_AS[name]
    if issubclass(model, Pass):
        return structure_pass(sample, replayed=False, idempotency_key=None, context=_context)
    return structure(sample, model)


def _expected(value: Any, prop: dict[str, Any]) -> Any:
    node = resolve(SPEC, prop)
    if isinstance(value, str) and node.get("format") == "date-time":
        return dt.datetime.fromisoformat(value)
    if isinstance(value, str) and node.get("format") == "date":
        return dt.date.fromisoformat(value)
    return value


@pytest.mark.parametrize("nulls", [False, True], ids=["full", "nulls"])
@pytest.mark.parametrize("name", sorted(READ_AS))
def test_the_public_readers_read_every_field_the_spec_names(name: str, nulls: bool) -> None:
    sample = _sample_object(name, nulls=nulls)
    read = _read(name, sample)
    assert type(read) is READ_AS[name] or name == "PassCommon"
    assert dict(read.extra) == {}
    properties, _ = _properties(name)
    for prop, value in sample.items():
        if "$ref" in properties[prop] and value is not None:
            continue  # a nested model: read and checked on its own
        if name == "JsonWebKeySet":
            continue
        assert getattr(read, prop) == _expected(value, properties[prop]), prop


def _strict_requests(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy where request objects may carry nothing the spec does not name."""
    strict = copy.deepcopy(spec)
    requests = set()
    for _path, _method, operation in operations(spec):
        body = operation.get("requestBody")
        if body is not None:
            requests.add(body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1])
    requests |= {"HolderInput", "HolderUpdateInput", "PassCreateRequest", "BatchPassRequest"}
    for name in requests | {"CardPlaintext"}:
        if name != "PassCreateRequest":  # an allOf part of BatchPassRequest
            strict["components"]["schemas"][name]["unevaluatedProperties"] = False
    return strict


@pytest.fixture
def encryption_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True)


@pytest.fixture
def loyaltylayer_sandbox_config(encryption_key: RSAKey) -> SandboxConfig:
    pem = encryption_key.as_pem(private=True)
    return SandboxConfig(rate_key="off", seed=3, encryption_key_pem=pem, **client_auth_config())


CREDENTIALS: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "client_secret_post": (CLIENT_ID, CLIENT_SECRET, {}),
    "client_secret_basic": (BASIC_ID, BASIC_SECRET, {"token_auth_method": "client_secret_basic"}),
    "private_key_jwt": (JWT_ID, None, {"private_key": JWT_KEY.as_pem(private=True)}),
}
"""``(client_id, client_secret, keyword arguments)`` of a client of each method the SDK has."""

TOKEN_REQUEST_FORMS = {
    "client_secret_post": "ClientSecretPostTokenRequest",
    "client_secret_basic": "ClientSecretBasicTokenRequest",
    "private_key_jwt": "PrivateKeyJwtTokenRequest",
}
"""The schema of the token request's body for each method."""

HTTP_HEADERS = {"host", "accept", "accept-encoding", "user-agent", "content-type", "content-length"}
"""Headers of HTTP itself (aiohttp's, and the SDK's User-Agent), which no operation documents."""


def _recorder(
    sent: list[tuple[str, bytes]], headers: list[tuple[str, dict[str, str]]]
) -> aiohttp.TraceConfig:
    """aiohttp's public request tracing: each body chunk and the headers the SDK's session
    sends."""

    async def on_chunk(
        _session: object, _ctx: object, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        sent.append((params.url.path, params.chunk))

    async def on_headers(
        _session: object, _ctx: object, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        headers.append((params.url.path, dict(params.headers)))

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk)
    trace.on_request_headers_sent.append(on_headers)
    return trace


def test_the_sdk_has_no_other_token_auth_method() -> None:
    assert sorted(CREDENTIALS) == sorted(TOKEN_REQUEST_FORMS) == sorted(TOKEN_AUTH_METHODS)


def _documented_headers(path: str) -> dict[str, str]:
    """The request headers an operation documents (lower-cased), each with what it is: a
    parameter, or the ``Authorization`` of one of its security schemes (by ``scheme``)."""
    operation = next(op for p, _method, op in operations(SPEC) if p == path)
    found = {}
    for parameter in operation.get("parameters", []):
        parameter = resolve(SPEC, parameter)
        if parameter["in"] == "header":
            found[parameter["name"].lower()] = "parameter"
    schemes = SPEC["components"]["securitySchemes"]
    for requirement in operation.get("security", SPEC["security"]):
        for name in requirement:
            scheme = schemes[name]
            assert scheme["type"] == "http", name
            found.setdefault("authorization", "")
            found["authorization"] += f" {scheme['scheme']}"
    return found


def _check_headers(method: str, path: str, headers: dict[str, str]) -> None:
    documented = _documented_headers(path)
    sent = {name.lower(): value for name, value in headers.items()}
    assert sorted(set(sent) - set(documented) - HTTP_HEADERS) == [], path
    scheme = sent.get("authorization", "").split(" ", 1)[0]
    expected = "Bearer" if path != TOKEN else "Basic" if method == "client_secret_basic" else ""
    assert scheme == expected, (path, method)
    if scheme:
        assert scheme.lower() in documented["authorization"].split(), (path, scheme)


async def _every_call(client: ll.AsyncLoyaltyLayer) -> None:
    """Every request the SDK can make, with every optional field it can send."""
    card = ll.Card(number="4111111111111111", expiry="12/39", name="ADA LOVELACE", cvv="123")
    token = await client.cards.tokenize(card, plan_id="pp-gold", idempotency_key="k-1")
    details: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+442071234567",
        "date_of_birth": dt.date(1990, 1, 31),
        "country": "GB",
    }
    holder = ll.Holder(**details)
    created = await client.passes.create(
        plan_id="pp-gold",
        holder=holder,
        enrol_token=token.enrol_token,
        reference="ref-1",
        metadata={"branch": "north"},
        idempotency_key="k-2",
    )
    request = ll.PassRequest(
        plan_id="esim-5gb", holder=holder, reference="ref-2", metadata={"a": "b"}
    )
    batch = await client.passes.batch_create([request])
    assert batch.failed == []
    await client.passes.status(created.pass_id)
    update = ll.HolderUpdate(**{**details, "last_name": "King", "country": "FR"})
    await client.passes.update(
        created.pass_id, holder=update, reference="ref-3", metadata={"c": "d"}
    )
    await client.passes.cancel(created.pass_id, reason="card closed")


@pytest.mark.parametrize("method", sorted(CREDENTIALS))
async def test_every_request_field_the_sdk_sends_is_in_the_spec(
    loyaltylayer_sandbox: Sandbox, encryption_key: RSAKey, method: str
) -> None:
    """Every request the SDK makes, signed in with each client authentication method: its
    body, its headers and, for the token request, the form of the body that method has."""
    sent: list[tuple[str, bytes]] = []
    headers: list[tuple[str, dict[str, str]]] = []
    client_id, secret, options = CREDENTIALS[method]
    async with aiohttp.ClientSession(trace_configs=[_recorder(sent, headers)]) as session:
        client = ll.AsyncLoyaltyLayer(
            client_id, secret, loyaltylayer_sandbox.base_url, session=session, **options
        )
        async with client:
            await _every_call(client)
    assert [path for path, _ in headers].count(TOKEN) == 1
    for path, request_headers in headers:
        _check_headers(method, path, request_headers)
    strict = _strict_requests(SPEC)
    by_path = {path: op for path, _method, op in operations(strict)}
    seen = set()
    for path, chunk in sent:
        body = json.loads(chunk)
        schema = by_path[path]["requestBody"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({**schema, "components": strict["components"]}).validate(
            body
        )
        seen.add(path)
        if path == TOKEN:
            form = {"$ref": f"#/components/schemas/{TOKEN_REQUEST_FORMS[method]}"}
            assert jsonschema.Draft202012Validator(
                {**form, "components": strict["components"]}
            ).is_valid(body), (method, sorted(body))
        if path == "/v1/card/tokenize":
            algorithms = ["RSA-OAEP-256", "A256GCM"]
            decrypted = jwe.decrypt_compact(body["encrypted_value"], encryption_key, algorithms)
            card = json.loads(decrypted.plaintext)
            plaintext = {"$ref": "#/components/schemas/CardPlaintext"}
            validator = jsonschema.Draft202012Validator(
                {**plaintext, "components": strict["components"]}
            )
            validator.validate(card)
    assert seen == {path for path, method, _ in operations(SPEC) if method == "post"}


def test_strict_request_schemas_refuse_a_field_the_spec_does_not_name() -> None:
    strict = _strict_requests(SPEC)
    schema = {"$ref": "#/components/schemas/PassUpdateRequest", "components": strict["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"pass_id": "p", "holder": {"email": "a@b.co"}})
    assert not validator.is_valid({"pass_id": "p", "holder": {"nickname": "Ada"}})
    assert not validator.is_valid({"pass_id": "p", "channel": "web"})


def test_the_token_request_takes_exactly_one_client_authentication_method() -> None:
    strict = _strict_requests(SPEC)
    schema = {"$ref": "#/components/schemas/TokenRequest", "components": strict["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    grant = {"grant_type": "client_credentials"}
    post = {"client_id": "c", "client_secret": "s"}
    jwt_body = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    jwt_body["client_assertion"] = "a.b.c"
    for valid in (post, post | grant, grant, {}, jwt_body, jwt_body | {"client_id": "c"} | grant):
        assert validator.is_valid(valid), valid
    invalid = [
        {"client_secret": "s"},  # a secret without its id
        post | {"client_assertion": "a.b.c"},  # two methods
        jwt_body | {"client_secret": "s"},
        {"client_assertion": "a.b.c"},  # an assertion without its type
        jwt_body | {"client_assertion_type": "password"},
        post | {"grant_type": "password"},
        post | {"scope": "passes"},  # a field the spec does not name
    ]
    for body in invalid:
        assert not validator.is_valid(body), body


def test_error_bodies_are_read() -> None:
    """Each property of the spec's Error lands on the SDK's exception (``retry_after`` is read
    by the transport, with the Retry-After header: test_client_pipeline's rate-limit tests)."""
    read_as = {
        "error": "error",
        "error_description": "description",
        "code": "status",
        "correlation_id": "correlation_id",
        "fields": "fields",
        "retry_after": "retry_after",
    }
    assert sorted(SCHEMAS["Error"]["properties"]) == sorted(read_as)
    body = {
        "error": "invalid_request",
        "error_description": "The request has invalid or missing fields.",
        "code": 400,
        "correlation_id": "corr_1",
        "fields": {"holder.email": "must be an email address"},
    }
    error = status_error(400, body, method="POST", path="/v1/pass/create", correlation_id="corr_1")
    for prop, value in body.items():
        assert getattr(error, read_as[prop]) == value, prop


def test_every_pass_class_has_its_schema() -> None:
    read_as_passes = {model for model in READ_AS.values() if issubclass(model, Pass)}
    assert read_as_passes == {Pass, UnknownPass, *PASS_TYPES.values()}
