"""Typed request and response models.

Strict in, tolerant out: what a user builds is validated in ``__init__`` (so a bad field fails
before any request, with an error naming the field), while what the server sends is read
tolerantly by :mod:`loyaltylayer._convert` (unknown fields kept in ``extra``, unknown statuses
kept as strings, unknown pass types as :class:`UnknownPass`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

import attrs

from . import _rules
from ._cardmath import card_type_for, expiry_is_past, luhn_valid, mask_card, parse_expiry
from ._errors import LoyaltyLayerError, ValidationError
from ._secrets import Secret, as_secret

__all__ = [
    "BatchItem",
    "BatchResult",
    "Card",
    "CardToken",
    "EncryptionKey",
    "EncryptionKeySet",
    "EsimPass",
    "Holder",
    "HolderUpdate",
    "LoungeKeyPass",
    "Pass",
    "PassRequest",
    "PassStatus",
    "PriorityPass",
    "UnknownPass",
]


def _masked_repr(number: str) -> str:
    return repr(mask_card(number))


def _hidden(_value: object) -> str:
    return "'***'"


def _normalize_pan(value: object) -> object:
    if isinstance(value, str):
        return Secret("".join(c for c in value if c not in " -"))
    return value


def _check_str(errors: dict[str, str], field: str, value: object, *, lo: int, hi: int) -> bool:
    if not isinstance(value, str):
        errors[field] = "must be a string"
        return False
    if not lo <= len(value) <= hi:
        errors[field] = (
            f"must be {lo} to {hi} characters" if lo else f"must be at most {hi} characters"
        )
        return False
    if _rules.has_control_characters(value):
        errors[field] = "must not contain control characters"
        return False
    return True


def raise_if_invalid(errors: Mapping[str, str]) -> None:
    """Raise one :class:`ValidationError` naming every bad field, if there is any."""
    if errors:
        raise ValidationError(errors)


@attrs.frozen(kw_only=True)
class Card:
    """A payment card, held only long enough to encrypt it.

    Its ``repr`` shows the last four digits only and never the CVV. ``number`` may be given with
    spaces or dashes; it is kept as digits. Both are held as :class:`~loyaltylayer.Secret`, so
    no traceback that shows local variables shows them.
    """

    number: str = attrs.field(converter=_normalize_pan, repr=_masked_repr)
    expiry: str
    name: str
    cvv: str = attrs.field(repr=_hidden, converter=as_secret)

    def __attrs_post_init__(self) -> None:
        errors: dict[str, str] = {}
        if not isinstance(self.number, str) or not _rules.is_pan(self.number):
            errors["card.number"] = "must be 12 to 19 digits"
        elif not luhn_valid(self.number):
            errors["card.number"] = "fails the Luhn check"
        if not isinstance(self.expiry, str) or (parsed := parse_expiry(self.expiry)) is None:
            errors["card.expiry"] = "must be MM/YY"
        elif expiry_is_past(*parsed, dt.datetime.now(dt.UTC).date()):
            errors["card.expiry"] = "is in the past"
        _check_str(errors, "card.name", self.name, lo=1, hi=_rules.NAME_MAX * 2)
        if not isinstance(self.cvv, str) or not _rules.is_cvv(self.cvv):
            errors["card.cvv"] = "must be 3 or 4 digits"
        raise_if_invalid(errors)

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def masked(self) -> str:
        """``**** 1111``: the most of a card number any output of the SDK shows."""
        return mask_card(self.number)

    @property
    def card_type(self) -> str | None:
        """The network inferred from the number (``VISA``, ``MASTERCARD``...), if known."""
        return card_type_for(self.number)


def _check_holder(
    errors: dict[str, str], prefix: str, holder: Holder | HolderUpdate, *, partial: bool
) -> None:
    for name in ("first_name", "last_name"):
        value = getattr(holder, name)
        if value is not None or not partial:
            _check_str(errors, f"{prefix}{name}", value, lo=1, hi=_rules.NAME_MAX)
    email = holder.email
    if email is not None and (not isinstance(email, str) or not _rules.is_email(email)):
        errors[f"{prefix}email"] = "must be an email address"
    if holder.phone is not None and (
        not isinstance(holder.phone, str) or not _rules.is_e164(holder.phone)
    ):
        errors[f"{prefix}phone"] = "must be an E.164 number such as +442071234567"
    if holder.date_of_birth is not None and not isinstance(holder.date_of_birth, dt.date):
        errors[f"{prefix}date_of_birth"] = "must be a datetime.date"
    if holder.country is not None and (
        not isinstance(holder.country, str) or not _rules.is_country(holder.country)
    ):
        errors[f"{prefix}country"] = "must be an ISO 3166-1 alpha-2 code such as GB"


def _date_or_iso(value: object) -> object:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


@attrs.frozen(kw_only=True)
class Holder:
    """The cardholder a pass is issued to. ``email`` is required when creating a pass."""

    first_name: str
    last_name: str
    email: str | None = None
    phone: str | None = None
    date_of_birth: dt.date | None = attrs.field(default=None, converter=_date_or_iso)
    country: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        errors: dict[str, str] = {}
        _check_holder(errors, "holder.", self, partial=False)
        raise_if_invalid(errors)


@attrs.frozen(kw_only=True)
class HolderUpdate:
    """A partial holder for ``passes.update``: only the fields given are changed."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    date_of_birth: dt.date | None = attrs.field(default=None, converter=_date_or_iso)
    country: str | None = None

    def __attrs_post_init__(self) -> None:
        errors: dict[str, str] = {}
        _check_holder(errors, "holder.", self, partial=True)
        raise_if_invalid(errors)


def check_reference_and_metadata(
    errors: dict[str, str], prefix: str, reference: object, metadata: object
) -> None:
    """The contract's limits on ``reference`` and ``metadata``, shared by create and update."""
    if reference is not None:
        _check_str(errors, f"{prefix}reference", reference, lo=1, hi=_rules.REFERENCE_MAX)
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            errors[f"{prefix}metadata"] = "must map strings to strings"
        elif len(metadata) > _rules.METADATA_MAX_PAIRS:
            errors[f"{prefix}metadata"] = f"must have at most {_rules.METADATA_MAX_PAIRS} pairs"


def check_idempotency_key(errors: dict[str, str], field: str, key: object) -> None:
    if key is not None and (
        not isinstance(key, str) or not _rules.is_sendable_idempotency_key(key)
    ):
        errors[field] = (
            f"must be 1 to {_rules.IDEMPOTENCY_KEY_MAX} printable ASCII characters, "
            "with no space at either end"
        )


def check_id(errors: dict[str, str], field: str, value: object) -> None:
    _check_str(errors, field, value, lo=1, hi=256)


@attrs.frozen(kw_only=True)
class PassRequest:
    """One pass to create, alone (``passes.create``) or in a batch (``passes.batch_create``).

    ``idempotency_key`` makes a retried or resumed create return the pass made the first time;
    the SDK generates one when it is not given.
    """

    plan_id: str
    holder: Holder
    enrol_token: str | None = attrs.field(default=None, repr=_hidden, converter=as_secret)
    reference: str | None = None
    metadata: Mapping[str, str] | None = None
    idempotency_key: str | None = None

    def __attrs_post_init__(self) -> None:
        errors: dict[str, str] = {}
        check_id(errors, "plan_id", self.plan_id)
        if not isinstance(self.holder, Holder):
            errors["holder"] = "must be a loyaltylayer.Holder"
        elif self.holder.email is None:
            errors["holder.email"] = "is required to create a pass"
        if self.enrol_token is not None:
            check_id(errors, "enrol_token", self.enrol_token)
        check_reference_and_metadata(errors, "", self.reference, self.metadata)
        check_idempotency_key(errors, "idempotency_key", self.idempotency_key)
        raise_if_invalid(errors)


@attrs.frozen(kw_only=True)
class EncryptionKey:
    """One public key of the card-encryption key set (a JWK)."""

    kid: str
    kty: str
    use: str | None = None
    alg: str | None = None
    n: str = attrs.field(repr=False)
    e: str = attrs.field(repr=False)
    expires_at: dt.datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def as_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kty": self.kty, "kid": self.kid, "n": self.n, "e": self.e}
        if self.use is not None:
            jwk["use"] = self.use
        if self.alg is not None:
            jwk["alg"] = self.alg
        return jwk


@attrs.frozen(kw_only=True)
class EncryptionKeySet:
    """The keys served by ``GET /v1/card/encryption-keys``; more than one during a rotation."""

    keys: list[EncryptionKey]
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class CardToken:
    """What ``cards.tokenize`` returns: a single-use token standing for the card."""

    enrol_token: str = attrs.field(repr=_hidden, converter=as_secret)
    expires_at: dt.datetime
    card_type: str
    card_last4: str
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


class PassStatus(enum.StrEnum):
    """A pass's lifecycle state. A value this SDK does not know yet is kept as-is, not rejected."""

    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @classmethod
    def _missing_(cls, value: object) -> PassStatus | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member


@attrs.frozen(kw_only=True)
class Pass:
    """Fields every pass has, whatever its type.

    ``idempotency_key`` and ``replayed`` are not from the pass itself but from the request that
    returned it: the key that was sent, and whether the server replayed an earlier answer.
    """

    pass_id: str
    type: str
    status: PassStatus
    plan_id: str | None = None
    holder: Holder | None = None
    reference: str | None = None
    metadata: Mapping[str, str] | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    idempotency_key: str | None = attrs.field(default=None, eq=False)
    replayed: bool = attrs.field(default=False, eq=False)


@attrs.frozen(kw_only=True)
class PriorityPass(Pass):
    """A Priority Pass membership, with its digital membership card."""

    membership_number: str
    dmc_qr_data: str = attrs.field(repr=False)
    valid_until: dt.date | None = None


@attrs.frozen(kw_only=True)
class LoungeKeyPass(Pass):
    """A LoungeKey membership; ``visits_remaining`` is ``None`` when visits are unlimited."""

    membership_number: str
    dmc_qr_data: str = attrs.field(repr=False)
    valid_until: dt.date | None = None
    visits_remaining: int | None = None


@attrs.frozen(kw_only=True)
class EsimPass(Pass):
    """A travel eSIM; ``activation_code`` is the LPA string a phone scans."""

    iccid: str
    activation_code: str = attrs.field(repr=False)
    qr_code_data: str = attrs.field(repr=False)
    data_allowance_mb: int
    valid_until: dt.date | None = None


@attrs.frozen(kw_only=True)
class UnknownPass(Pass):
    """A pass of a type this SDK does not know yet: the common fields, and ``raw`` JSON."""

    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class BatchItem:
    """The outcome of one request of ``passes.batch_create``, at its input position."""

    index: int
    request: PassRequest
    idempotency_key: str
    pass_: Pass | None = None
    error: LoyaltyLayerError | None = attrs.field(default=None, eq=False)
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.pass_ is not None


@attrs.frozen(kw_only=True)
class BatchResult:
    """Every item of a ``batch_create`` call, in input order."""

    items: list[BatchItem]

    @property
    def created(self) -> list[BatchItem]:
        return [item for item in self.items if item.ok]

    @property
    def failed(self) -> list[BatchItem]:
        return [item for item in self.items if not item.ok]

    def raise_for_failures(self) -> None:
        """Raise the first item's error, if any item failed."""
        for item in self.items:
            if item.error is not None:
                raise item.error
