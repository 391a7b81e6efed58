"""Request-body checks: each problem is reported under its dotted field path, never with its value.

The predicates and limits are the SDK's own (``loyaltylayer._rules``), so the sandbox rejects
exactly what the SDK would reject locally.
"""

from __future__ import annotations

from typing import Any

import attrs

from loyaltylayer import _rules

from ._errors import ApiError, invalid_request

__all__ = [
    "CreateRequest",
    "Fields",
    "UpdateRequest",
    "parse_cancel",
    "parse_create",
    "parse_pass_id",
    "parse_update",
    "require_object",
]

Fields = dict[str, str]

_HOLDER_KEYS = ("first_name", "last_name", "email", "phone", "date_of_birth", "country")
_OPTIONAL_HOLDER = {
    "phone": (_rules.is_e164, "must be an E.164 phone number such as +442071234567"),
    "date_of_birth": (_rules.is_iso_date, "must be an ISO date (YYYY-MM-DD)"),
    "country": (_rules.is_country, "must be an ISO 3166-1 alpha-2 country code"),
}


def require_object(raw: object, path: str = "body") -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid_request({path: "must be a JSON object"})
    return raw


def _name(value: object, path: str, fields: Fields) -> str | None:
    if not isinstance(value, str):
        fields[path] = "must be a string"
        return None
    if not value.strip() or len(value) > _rules.NAME_MAX:
        fields[path] = f"must be 1-{_rules.NAME_MAX} characters, not blank"
        return None
    return value


def _email(value: object, path: str, fields: Fields) -> str | None:
    if not isinstance(value, str):
        fields[path] = "must be a string"
        return None
    if not _rules.is_email(value):
        fields[path] = "must be an email address"
        return None
    return value


def _holder(raw: object, path: str, fields: Fields, *, partial: bool) -> dict[str, str | None]:
    """The holder fields given; for a full holder, absent optional fields come back as None."""
    if not isinstance(raw, dict):
        fields[path] = "must be an object"
        return {}
    holder: dict[str, str | None] = {}
    for key in ("first_name", "last_name"):
        if key in raw:
            holder[key] = _name(raw[key], f"{path}.{key}", fields)
        elif not partial:
            fields[f"{path}.{key}"] = "is required"
    if "email" in raw:
        holder["email"] = _email(raw["email"], f"{path}.email", fields)
    elif not partial:
        fields[f"{path}.email"] = "is required"
    for key, (predicate, message) in _OPTIONAL_HOLDER.items():
        value = raw.get(key)
        if value is None:
            if key in raw or not partial:
                holder[key] = None
        elif not isinstance(value, str):
            fields[f"{path}.{key}"] = "must be a string or null"
        elif not predicate(value):
            fields[f"{path}.{key}"] = message
        else:
            holder[key] = value
    return holder


def _reference(value: object, path: str, fields: Fields) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        fields[path] = "must be a string or null"
    elif len(value) > _rules.REFERENCE_MAX:
        fields[path] = f"must be at most {_rules.REFERENCE_MAX} characters"
    else:
        return value
    return None


def _metadata(value: object, path: str, fields: Fields) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fields[path] = "must be an object of string pairs"
        return {}
    if len(value) > _rules.METADATA_MAX_PAIRS:
        fields[path] = f"must have at most {_rules.METADATA_MAX_PAIRS} pairs"
        return {}
    bad = [key for key, item in value.items() if not isinstance(item, str)]
    for key in bad:
        fields[f"{path}.{key}"] = "must be a string"
    return {} if bad else dict(value)


def _string(raw: dict[str, Any], key: str, path: str, fields: Fields) -> str | None:
    value = raw.get(key)
    if value is None:
        fields[path] = "is required"
    elif not isinstance(value, str):
        fields[path] = "must be a string"
    elif not value:
        fields[path] = "must not be empty"
    else:
        return value
    return None


@attrs.frozen(kw_only=True)
class CreateRequest:
    plan_id: str
    enrol_token: str | None
    holder: dict[str, str | None]
    reference: str | None
    metadata: dict[str, str]


def parse_create(raw: dict[str, Any], prefix: str, fields: Fields) -> CreateRequest | None:
    """A pass-create body; ``None`` (with ``fields`` filled) when any field is wrong.

    ``enrol_token`` must be a string or null whatever the plan; whether it is required is only
    known once the plan is.
    """
    plan_id = _string(raw, "plan_id", f"{prefix}plan_id", fields)
    enrol_token = raw.get("enrol_token")
    if enrol_token is not None and not isinstance(enrol_token, str):
        fields[f"{prefix}enrol_token"] = "must be a string"
    if "holder" in raw:
        holder = _holder(raw["holder"], f"{prefix}holder", fields, partial=False)
    else:
        fields[f"{prefix}holder"] = "is required"
        holder = {}
    reference = _reference(raw.get("reference"), f"{prefix}reference", fields)
    metadata = _metadata(raw.get("metadata"), f"{prefix}metadata", fields)
    if plan_id is None or fields:
        return None
    return CreateRequest(
        plan_id=plan_id,
        enrol_token=enrol_token,
        holder={key: holder.get(key) for key in _HOLDER_KEYS},
        reference=reference,
        metadata=metadata,
    )


@attrs.frozen(kw_only=True)
class UpdateRequest:
    pass_id: str
    holder: dict[str, str | None]
    reference: str | None
    set_reference: bool
    metadata: dict[str, str] | None


def parse_pass_id(raw: dict[str, Any], fields: Fields) -> str | None:
    return _string(raw, "pass_id", "pass_id", fields)


def parse_update(raw: dict[str, Any]) -> UpdateRequest:
    """Only the fields given change; ``null`` clears an optional field."""
    fields: Fields = {}
    pass_id = parse_pass_id(raw, fields)
    holder = _holder(raw["holder"], "holder", fields, partial=True) if "holder" in raw else {}
    reference = _reference(raw.get("reference"), "reference", fields)
    metadata = _metadata(raw["metadata"], "metadata", fields) if "metadata" in raw else None
    if pass_id is None or fields:
        raise invalid_request(fields)
    return UpdateRequest(
        pass_id=pass_id,
        holder=holder,
        reference=reference,
        set_reference="reference" in raw,
        metadata=metadata,
    )


def parse_cancel(raw: dict[str, Any]) -> str:
    fields: Fields = {}
    pass_id = parse_pass_id(raw, fields)
    reason = raw.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > _rules.REASON_MAX):
        fields["reason"] = f"must be a string of at most {_rules.REASON_MAX} characters"
    if pass_id is None or fields:
        raise invalid_request(fields)
    return pass_id


def missing_enrol_token(prefix: str) -> ApiError:
    """A lounge plan without a token is a malformed request, not an invalid token."""
    return invalid_request({f"{prefix}enrol_token": "is required for this plan"})


@attrs.frozen(kw_only=True)
class TokenizeRequest:
    encrypted_value: str
    plan_id: str
    card_type: str


def parse_tokenize(raw: dict[str, Any]) -> TokenizeRequest:
    fields: Fields = {}
    encrypted_value = _string(raw, "encrypted_value", "encrypted_value", fields)
    plan_id = _string(raw, "plan_id", "plan_id", fields)
    card_type = _string(raw, "card_type", "card_type", fields)
    if encrypted_value is None or plan_id is None or card_type is None:
        raise invalid_request(fields)
    return TokenizeRequest(encrypted_value=encrypted_value, plan_id=plan_id, card_type=card_type)


def parse_token_request(raw: dict[str, Any]) -> tuple[str, str]:
    """``(client_id, client_secret)`` from the body (``client_secret_post``), and the
    ``grant_type`` checked as :func:`parse_grant_type` does."""
    fields: Fields = {}
    found: dict[str, str] = {}
    for key in ("client_id", "client_secret"):
        value = raw.get(key)
        if value is None:
            fields[key] = "is required"
        elif not isinstance(value, str):
            fields[key] = "must be a string"
        else:
            found[key] = value
    parse_grant_type(raw, fields)
    return found["client_id"], found["client_secret"]


def parse_grant_type(raw: dict[str, Any], fields: Fields | None = None) -> None:
    """``grant_type`` may be omitted, but when present (even as ``null``) it must be
    ``client_credentials``; raises with ``fields`` (the body's other problems) too."""
    fields = {} if fields is None else fields
    grant_type = raw.get("grant_type")
    if "grant_type" in raw and not isinstance(grant_type, str):
        fields["grant_type"] = "must be a string"
    if fields:
        raise invalid_request(fields)
    if grant_type is not None and grant_type != "client_credentials":
        raise ApiError(400, "unsupported_grant_type", "grant_type must be client_credentials.")


def is_idempotency_key(value: object) -> bool:
    return isinstance(value, str) and _rules.is_idempotency_key(value)


IDEMPOTENCY_KEY_RULE = f"must be 1-{_rules.IDEMPOTENCY_KEY_MAX} printable ASCII characters"
