"""The endpoints' own work, once the pipeline has authenticated and parsed the request."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from loyaltylayer import _cardmath, _rules

from ._clients import authenticate_client
from ._core import Core
from ._errors import ApiError, already_cancelled, invalid_pass_id, invalid_request
from ._idempotency import Stored, digest
from ._state import rfc3339
from ._validate import (
    IDEMPOTENCY_KEY_RULE,
    Fields,
    is_idempotency_key,
    missing_enrol_token,
    parse_cancel,
    parse_create,
    parse_pass_id,
    parse_tokenize,
    parse_update,
)

__all__ = ["BATCH_PATH", "ROUTES", "Call", "Route", "note_batch"]

CREATE_PATH = "/v1/pass/create"
BATCH_PATH = "/v1/pass/batch-create"


@attrs.define(kw_only=True)
class Call:
    """One API request in flight: what the handlers need and what the journal records."""

    method: str
    path: str
    correlation_id: str
    client_ip: str | None
    received: float
    now: float
    url: str = ""
    """The URL the request was sent to (an RFC 7523 assertion names it as its audience)."""
    authorization: str | None = attrs.field(default=None, repr=False)
    client_id: str | None = None
    idempotency_key: str | None = None
    item_keys: tuple[str | None, ...] | None = None
    batch_size: int | None = None
    replayed: bool = False
    fault: str | None = None


Handler = Callable[[Core, Call, dict[str, Any]], Any]


@attrs.frozen(kw_only=True)
class Route:
    method: str
    handler: Handler
    authenticated: bool = True
    idempotent: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict)


def token(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    client_id = authenticate_client(
        clients=core.config.clients,
        registrations=core.config.registrations,
        assertions=core.assertions,
        body=body,
        authorization=call.authorization,
        token_url=call.url,
        now=call.now,
    )
    call.client_id = client_id
    ttl = core.config.token_ttl
    return {
        "access_token": core.state.issue_access_token(client_id, call.now, ttl),
        "token_type": "Bearer",
        "expires_in": max(1, math.floor(ttl)),
    }


def encryption_keys(core: Core, _call: Call, _body: dict[str, Any]) -> dict[str, Any]:
    return core.keys.jwks()


def _invalid_plan_id() -> ApiError:
    return ApiError(400, "invalid_plan_id", "Invalid plan ID")


def _invalid_card(description: str) -> ApiError:
    return ApiError(400, "invalid_card", description)


def _card_number(card: object, today: _dt.date) -> str:
    """The PAN, once the card passes the checks; messages never quote card data."""
    if not isinstance(card, dict):
        raise _invalid_card("The card data must be an object with CardNumber, CardExpiry, Cvv.")
    pan = card.get("CardNumber")
    if not isinstance(pan, str) or not _rules.is_pan(pan):
        raise _invalid_card("CardNumber must be 12 to 19 digits.")
    if not _cardmath.luhn_valid(pan):
        raise _invalid_card("CardNumber fails the Luhn check.")
    expiry = card.get("CardExpiry")
    parsed = _cardmath.parse_expiry(expiry) if isinstance(expiry, str) else None
    if parsed is None:
        raise _invalid_card("CardExpiry must be MM/YY.")
    if _cardmath.expiry_is_past(parsed[0], parsed[1], today):
        raise _invalid_card("The card has expired.")
    cvv = card.get("Cvv")
    if not isinstance(cvv, str) or not _rules.is_cvv(cvv):
        raise _invalid_card("Cvv must be 3 or 4 digits.")
    name = card.get("NameOnCard")
    if not isinstance(name, str) or not name.strip():
        raise _invalid_card("NameOnCard is required.")
    return pan


def tokenize(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    request = parse_tokenize(body)
    if request.plan_id not in core.config.plans:
        raise _invalid_plan_id()
    if request.card_type not in _cardmath.CARD_TYPES:
        raise ApiError(
            400,
            "invalid_card_type",
            f"card_type must be one of {', '.join(_cardmath.CARD_TYPES)}.",
        )
    plaintext = core.keys.decrypt(request.encrypted_value)
    try:
        card = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise ApiError(
            400, "invalid_encrypted_value", "The decrypted card data is not JSON."
        ) from None
    today = _dt.datetime.fromtimestamp(call.now, _dt.UTC).date()
    pan = _card_number(card, today)
    network = _cardmath.card_type_for(pan)
    if network is not None and network != request.card_type:
        raise ApiError(400, "invalid_card_type", "card_type does not match the card number.")
    assert call.client_id is not None
    enrol_token, expires_at = core.state.issue_enrol_token(
        call.client_id, call.now, core.config.enrol_token_ttl
    )
    return {
        "enrol_token": enrol_token,
        "expires_at": rfc3339(expires_at),
        "card_type": request.card_type,
        "card_last4": pan[-4:],
    }


def _create(core: Core, call: Call, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    fields: Fields = {}
    request = parse_create(raw, prefix, fields)
    if request is None:
        raise invalid_request(fields)
    plan = core.config.plans.get(request.plan_id)
    if plan is None:
        raise _invalid_plan_id()
    assert call.client_id is not None
    if plan.needs_enrol_token:
        if request.enrol_token is None:
            raise missing_enrol_token(prefix)
        if not core.state.enrol_token_usable(request.enrol_token, call.client_id, call.now):
            raise ApiError(400, "invalid_enrol_token", "Provided enrol_token is invalid or expired")
        core.state.consume_enrol_token(request.enrol_token)
    return core.state.create_pass(call.client_id, plan, request, call.now)


def create(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    return _create(core, call, body, "")


def _failed(call: Call, index: int, error: ApiError) -> dict[str, Any]:
    return {"index": index, "status": "failed", "error": error.body(call.correlation_id)}


def _created(index: int, pass_: Any, *, replayed: bool) -> dict[str, Any]:
    return {"index": index, "status": "created", "pass": pass_, "replayed": replayed}


def _item_key(item: object) -> str | None:
    key = item.get("idempotency_key") if isinstance(item, dict) else None
    return key if isinstance(key, str) else None


def _batch_item(core: Core, call: Call, index: int, item: object) -> dict[str, Any]:
    """One item: a create with its own optional key, sharing keys with ``/v1/pass/create``."""
    prefix = f"passes[{index}]."
    if not isinstance(item, dict):
        return _failed(call, index, invalid_request({f"passes[{index}]": "must be an object"}))
    key = item.get("idempotency_key")
    if key is not None and not is_idempotency_key(key):
        fields = {f"{prefix}idempotency_key": IDEMPOTENCY_KEY_RULE}
        return _failed(call, index, invalid_request(fields))
    request = {name: value for name, value in item.items() if name != "idempotency_key"}
    assert call.client_id is not None
    if key is not None:
        try:
            stored = core.idempotency.begin(
                call.client_id, key, digest(CREATE_PATH, request), call.now
            )
        except ApiError as error:
            return _failed(call, index, error)
        if stored is not None:
            return _created(index, stored.body, replayed=True)
    try:
        pass_ = _create(core, call, request, prefix)
    except ApiError as error:
        if key is not None:
            core.idempotency.abandon(call.client_id, key)
        return _failed(call, index, error)
    if key is not None:
        core.idempotency.finish(call.client_id, key, Stored(status=200, body=pass_), call.now)
    return _created(index, pass_, replayed=False)


def batch_create(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    items = body.get("passes")
    if not isinstance(items, list):
        message = "is required" if items is None else "must be a list of pass requests"
        raise invalid_request({"passes": message})
    if not items:
        raise invalid_request({"passes": f"must hold 1 to {_rules.MAX_BATCH} pass requests"})
    if len(items) > _rules.MAX_BATCH:
        raise ApiError(
            400, "batch_too_large", f"A batch holds at most {_rules.MAX_BATCH} pass requests."
        )
    results = [_batch_item(core, call, index, item) for index, item in enumerate(items)]
    created = sum(1 for result in results if result["status"] == "created")
    return {"results": results, "created": created, "failed": len(results) - created}


def _live_pass(core: Core, call: Call, pass_id: str) -> str:
    """The caller's client_id, once ``pass_id`` is known to be one of its passes, not cancelled."""
    assert call.client_id is not None
    pass_ = core.state.get_pass(call.client_id, pass_id)
    if pass_ is None:
        raise invalid_pass_id()
    if pass_["status"] == "cancelled":
        raise already_cancelled(pass_id)
    return call.client_id


def status(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    fields: Fields = {}
    pass_id = parse_pass_id(body, fields)
    if pass_id is None:
        raise invalid_request(fields)
    assert call.client_id is not None
    pass_ = core.state.get_pass(call.client_id, pass_id)
    if pass_ is None:
        raise invalid_pass_id()
    return pass_


def update(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    request = parse_update(body)
    client_id = _live_pass(core, call, request.pass_id)
    return core.state.update_pass(client_id, request, call.now)


def cancel(core: Core, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    pass_id = parse_cancel(body)
    client_id = _live_pass(core, call, pass_id)
    return core.state.cancel_pass(client_id, pass_id, call.now)


ROUTES: dict[str, Route] = {
    "/auth/token": Route(
        method="POST", handler=token, authenticated=False, headers={"Cache-Control": "no-store"}
    ),
    "/v1/card/encryption-keys": Route(method="GET", handler=encryption_keys),
    "/v1/card/tokenize": Route(method="POST", handler=tokenize, idempotent=True),
    CREATE_PATH: Route(method="POST", handler=create, idempotent=True),
    BATCH_PATH: Route(method="POST", handler=batch_create, idempotent=True),
    "/v1/pass/status": Route(method="POST", handler=status),
    "/v1/pass/update": Route(method="POST", handler=update, idempotent=True),
    "/v1/pass/cancel": Route(method="POST", handler=cancel, idempotent=True),
}


def note_batch(call: Call, body: dict[str, Any]) -> None:
    """Journal a batch's size and item keys, also when its answer is a replay."""
    items = body.get("passes")
    if isinstance(items, list):
        call.batch_size = len(items)
        call.item_keys = tuple(_item_key(item) for item in items)
