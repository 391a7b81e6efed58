"""schemathesis holds the sandbox to the packaged OpenAPI document, over a real socket.

Every operation is called with the spec's examples, boundary cases (coverage) and generated
bodies, valid and invalid, with a fixed seed and a small budget; then the links
tokenize → create → status → update → cancel are followed statefully. Every response must
conform to its schema (strictly: the sandbox may send no field the spec does not name) and
carry only headers the spec documents for it (the sandboxes here send the optional
``RateLimit-*`` headers too), no 5xx may come back unless a fault asked for it, valid input is
never refused as ``invalid_request`` and invalid input always gets the documented 400 body.
A valid token request is sent as its client authentication method asks: with HTTP Basic when
its body has no credentials, with a real signed assertion when it has one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_support import (
    BATCH,
    JWT_ID,
    TEST_CARDS,
    TOKEN,
    TOKENIZE,
    SandboxHttp,
    client_auth_config,
    load_spec,
    resolve,
    strict_responses,
)
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation

from loyaltylayer import _rules
from loyaltylayer.sandbox import Fault, Plan, SandboxConfig, SandboxThread
from loyaltylayer.sandbox._config import DEFAULT_PLANS

SEED = 21
BODY = ParameterLocation.BODY
EXAMPLE_PASS_ID = "pss_7Hq2LmN4pR8sT1vW3xY5zA6b"
"""The pass the spec's examples name: the examples test makes a real one to stand for it."""
PLANS = {
    **DEFAULT_PLANS,
    "lk-4": Plan(type="lounge_key", visits=4),
    "esim-1gb": Plan(type="esim", data_allowance_mb=1024, validity_days=7),
    "hotel-x": Plan(type="hotel_night"),
}
"""The sandbox's plans and one of each other kind the config allows, so that every pass schema
of the spec (OtherPass for the unknown ``hotel_night``) is met."""
SANDBOX_PLANS = sorted(PLANS)
SPEC = load_spec()


def _config(**kwargs: Any) -> SandboxConfig:
    """A sandbox for these tests: the three kinds of client, and a rate limit too high to reach
    that still sends the ``RateLimit-*`` headers on every answer."""
    return SandboxConfig(
        rate_limit=1_000_000, rate_headers=True, seed=SEED, **client_auth_config(), **kwargs
    )


def _schema(*phases: str, mode: str = "all") -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": 10, "mode": mode, "database": "none"},
            "phases": {
                name: {"enabled": name in phases}
                for name in ("examples", "coverage", "fuzzing", "stateful")
            }
            | {"examples": {"enabled": "examples" in phases, "fill-missing": True}},
            "checks": {
                "negative_data_rejection": {"expected-statuses": ["400", "401", "409"]},
                "positive_data_acceptance": {"enabled": False},
            },
            # A bad batch item fails alone, in a 200: a_bad_batch_item_fails_alone checks it.
            "operations": [
                {
                    "include-path": BATCH,
                    "checks": {"negative_data_rejection": {"enabled": False}},
                }
            ],
        }
    )
    return schemathesis.openapi.from_dict(strict_responses(load_spec()), config=config)


examples_and_coverage = _schema("examples", "coverage")
examples = _schema("examples")
fuzzing = _schema("fuzzing")
# Valid requests only: the links are walked to see that each answer leads to the next call (bad
# input is the other tests' subject, and would spend the walk's steps on refusals).
stateful = _schema("stateful", mode="positive")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHttp]:
    with SandboxThread(_config(plans=PLANS)) as sb:
        http = SandboxHttp(sb)
        yield http
        http.session.close()


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[SandboxThread, SandboxHttp]]:
    with SandboxThread(_config()) as sb:
        http = SandboxHttp(sb)
        yield sb, http
        http.session.close()


def _positive(case: schemathesis.Case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


PLAN_RULE = re.compile(r"(passes\[\d+\]\.)?enrol_token")
"""The one field a valid request can still be refused for: an enrol_token the plan needs (which
plans need one is the server's mapping, so no schema can say it; the spec's text does)."""


def _invalid_request_fields(body: object) -> object:
    """The ``fields`` of an ``invalid_request`` error body but the plan's rule, else None."""
    if isinstance(body, dict) and body.get("error") == "invalid_request":
        fields = body.get("fields", {})
        if list(fields.values()) != ["is required for this plan"]:
            return fields
        assert PLAN_RULE.fullmatch(next(iter(fields))), fields
    return None


def valid_input_is_never_invalid_request(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """What the spec calls well-formed, the sandbox does not refuse as malformed (the other
    direction of schemathesis's negative_data_rejection), batch items included."""
    if not _positive(case) or response.status_code not in (200, 400):
        return
    body = response.json()
    fields = _invalid_request_fields(body)
    assert fields is None, f"valid request refused as invalid_request: {fields}"
    for result in body.get("results", []) if case.operation.path == BATCH else []:
        fields = _invalid_request_fields(result.get("error"))
        assert fields is None, f"valid batch item {result['index']} refused: {fields}"


def _real_jwe(case: schemathesis.Case, sandbox: SandboxHttp) -> None:
    """A valid tokenize request gets a real JWE of a card of its ``card_type``, made with the
    sandbox's key by the SDK's ``encrypt_card`` (a generated string is never one)."""
    if case.operation.path == TOKENIZE and _positive(case) and isinstance(case.body, dict):
        case.body["encrypted_value"] = sandbox.encrypted_card(str(case.body.get("card_type")))


def _real_pass(case: schemathesis.Case, sandbox: SandboxHttp) -> None:
    """The pass the spec's examples name becomes a real pass of the sandbox."""
    if isinstance(case.body, dict) and case.body.get("pass_id") == EXAMPLE_PASS_ID:
        case.body["pass_id"] = sandbox.new_pass()


def _aim_at_the_sandbox(case: schemathesis.Case, data: st.DataObject, sandbox: SandboxHttp) -> None:
    """Make about half of the valid generated requests name what the sandbox has, so the
    success paths are fuzzed too: its plans and its passes."""
    body = case.body
    if not _positive(case) or not isinstance(body, dict):
        return
    path = case.operation.path
    if path == TOKENIZE:
        if data.draw(st.booleans(), label="known plan"):
            body["plan_id"] = data.draw(st.sampled_from(SANDBOX_PLANS), label="plan")
    elif path == "/v1/pass/create" and data.draw(st.booleans(), label="known plan"):
        body["plan_id"] = plan = data.draw(st.sampled_from(SANDBOX_PLANS), label="plan")
        if PLANS[plan].needs_enrol_token:
            body["enrol_token"] = sandbox.enrol_token(plan)
    elif path in ("/v1/pass/status", "/v1/pass/update", "/v1/pass/cancel") and data.draw(
        st.booleans(), label="known pass"
    ):
        body["pass_id"] = sandbox.new_pass(data.draw(st.sampled_from(SANDBOX_PLANS), label="plan"))


def a_bad_batch_item_fails_alone(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """An invalid batch is refused whole, or answered 200 with a bad item failed as
    ``invalid_request`` (schemathesis's negative_data_rejection expects a 4xx)."""
    meta = case.meta
    if case.operation.path != BATCH or meta is None or not meta.is_negative_at(BODY):
        return
    if response.status_code != 200:
        assert response.status_code in (400, 401, 409), response.status_code
        return
    errors = [result.get("error", {}).get("error") for result in response.json()["results"]]
    assert "invalid_request" in errors, f"a malformed batch had no item refused: {errors}"


TRANSPORT_HEADERS = {"content-type", "content-length", "date", "server", "connection"}
"""Headers of HTTP itself (aiohttp's), which no operation documents."""


def every_header_is_documented(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """Each header of an answer the spec documents is one it documents on that response
    (schemathesis checks those against their schemas; a method the path does not have gets an
    undocumented 405, which schemathesis judges)."""
    operation = SPEC["paths"][case.operation.path].get(case.method.lower(), {})
    documented = operation.get("responses", {}).get(str(response.status_code))
    if documented is None:
        return
    names = {name.lower() for name in resolve(SPEC, documented).get("headers", {})}
    sent = {name.lower() for name in response.headers}
    assert sorted(sent - names - TRANSPORT_HEADERS) == [], (
        f"{response.status_code} sends headers the spec does not document"
    )


CHECKS = [valid_input_is_never_invalid_request, a_bad_batch_item_fails_alone]
ALL_CHECKS = [*CHECKS, every_header_is_documented]


def _call_kwargs(case: schemathesis.Case, sandbox: SandboxHttp) -> dict[str, Any]:
    """How to send ``case``: signed in, and a valid token request authenticated the way its
    body says (no schema can tie the Basic header to the body without credentials)."""
    kwargs = sandbox.call_kwargs()
    body = case.body
    if case.operation.path != TOKEN or not _positive(case) or not isinstance(body, dict):
        return kwargs
    if "client_assertion" in body:  # private_key_jwt
        body["client_assertion"] = sandbox.client_assertion()
        if "client_id" in body:
            body["client_id"] = JWT_ID
    elif "client_secret" not in body:  # client_secret_basic
        kwargs["headers"] = {**kwargs["headers"], **sandbox.basic_authorization()}
    return kwargs


def _call(case: schemathesis.Case, sandbox: SandboxHttp) -> None:
    _fresh_idempotency_key(case)
    case.call_and_validate(additional_checks=ALL_CHECKS, **_call_kwargs(case, sandbox))


_KEY_SERIAL = itertools.count()


def _fresh_idempotency_key(case: schemathesis.Case) -> None:
    """Make a valid generated Idempotency-Key unique, so each body is judged on its own rather
    than answered ``409 idempotency_key_reused`` (replays are test_sandbox_idempotency's)."""
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and _rules.is_idempotency_key(key) and key.strip() == key:
        suffix = f"~{next(_KEY_SERIAL)}"
        case.headers["Idempotency-Key"] = key[: _rules.IDEMPOTENCY_KEY_MAX - len(suffix)] + suffix


@examples_and_coverage.parametrize()
def test_examples_and_boundaries(case: schemathesis.Case, sandbox: SandboxHttp) -> None:
    _real_jwe(case, sandbox)
    _real_pass(case, sandbox)
    _call(case, sandbox)


@fuzzing.parametrize()
@fuzzing.given(data=st.data())
def test_generated_requests(
    case: schemathesis.Case, data: st.DataObject, sandbox: SandboxHttp
) -> None:
    _real_jwe(case, sandbox)
    _aim_at_the_sandbox(case, data, sandbox)
    _call(case, sandbox)


@examples.parametrize()
def test_injected_faults_get_the_documented_bodies(
    case: schemathesis.Case, faulty: tuple[SandboxThread, SandboxHttp]
) -> None:
    """The one way to a 5xx (or a 429 here, where the rate limit is out of reach) is asking for
    it."""
    sb, http = faulty
    _real_jwe(case, http)
    for status in (429, 500, 502, 504):
        sb.clear_faults()
        sb.add_fault(Fault(route="*", kind="status", status=status))
        response = case.call(**_call_kwargs(case, http))
        assert response.status_code == status
        case.validate_response(
            response,
            excluded_checks=[not_a_server_error],
            additional_checks=[every_header_is_documented],
        )
    sb.clear_faults()


def test_the_links_hold_statefully() -> None:
    """A fresh sandbox, so what the links made can be told: the only way to a lounge pass is
    the enrol_token a tokenize answer hands to create, and the only way to update or cancel a
    pass is the pass_id a create answer hands on."""
    machine: Any = stateful.as_state_machine()
    with SandboxThread(_config(plans=PLANS)) as sb:
        sandbox = SandboxHttp(sb)
        _run_links(machine, sandbox)
        passes = sb.passes()
        journal = [(entry.path, entry.status) for entry in sb.journal()]
    assert {p["type"] for p in passes} & {"priority_pass", "lounge_key"}
    for path in ("/v1/pass/status", "/v1/pass/update", "/v1/pass/cancel"):
        assert (path, 200) in journal


def _run_links(machine: Any, sandbox: SandboxHttp) -> None:
    class Machine(machine):  # type: ignore[misc,valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            body = case.body
            if case.operation.path == TOKENIZE and _positive(case) and isinstance(body, dict):
                # A card the sandbox accepts, for a lounge plan: the create link needs its token.
                body["plan_id"] = "pp-gold"
                if body.get("card_type") not in TEST_CARDS:
                    body["card_type"] = "VISA"
            _real_jwe(case, sandbox)
            _fresh_idempotency_key(case)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return _call_kwargs(case, sandbox)

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            kwargs.pop("additional_checks", None)
            super().validate_response(response, case, additional_checks=ALL_CHECKS, **kwargs)

    Machine.run(
        settings=settings(
            # Enough walks that every link is followed several times (update, the rarest, four
            # times in 30 walks): one walk too few must not decide the test.
            max_examples=60,
            stateful_step_count=8,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
