"""The generated readers read every reply exactly as cattrs' own hooks do, good or bad, and
name every bad field of a reply they refuse."""

from __future__ import annotations

import datetime as dt
import functools
import traceback
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
import pytest
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn, override
from hypothesis import given
from hypothesis import strategies as st

from loyaltylayer import _convert
from loyaltylayer._errors import UnexpectedResponseError
from loyaltylayer._models import (
    CardToken,
    EncryptionKey,
    EncryptionKeySet,
    Holder,
    PassStatus,
    PriorityPass,
    UnknownPass,
)

HOLDER = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone": None,
    "date_of_birth": "1815-12-10",
    "country": None,
}
COMMON = {
    "pass_id": "pss_1",
    "status": "active",
    "plan_id": "pp-gold",
    "holder": HOLDER,
    "reference": None,
    "metadata": {"crm": "42"},
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00+02:00",
    "cancelled_at": None,
}
PASSES = [
    COMMON | {"type": "priority_pass", "membership_number": "PP1", "dmc_qr_data": "q"},
    COMMON
    | {
        "type": "lounge_key",
        "membership_number": "LK1",
        "dmc_qr_data": "q",
        "valid_until": "2027-01-01",
        "visits_remaining": 3,
    },
    COMMON
    | {
        "type": "esim",
        "iccid": "89",
        "activation_code": "LPA:1",
        "qr_code_data": "q",
        "data_allowance_mb": 1024,
    },
    COMMON | {"type": "new_kind", "anything": [1]},
]
KEY = {"kid": "k1", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"}
TOKEN = {
    "enrol_token": "tok_1",
    "expires_at": "2026-01-01T00:15:00Z",
    "card_type": "VISA",
    "card_last4": "1111",
}
CLIENT_SIDE = ["extra", "raw", "replayed", "idempotency_key"]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=4),
    st.sampled_from(["2026-01-01", "2026-01-01T00:00:00Z", "active", "odd", "esim", "x"]),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
    st.just(HOLDER | {"first_name": None}),
    st.just(HOLDER | {"nickname": "A"}),
    st.just({k: v for k, v in HOLDER.items() if k != "last_name"}),
)


def _changed(reply: dict[str, Any], names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda changed, dropped: {
            name: value for name, value in (reply | changed).items() if name not in dropped
        },
        st.dictionaries(st.sampled_from(names), values, max_size=2),
        st.sets(st.sampled_from(names), max_size=1),
    )


pass_replies = st.sampled_from(PASSES).flatmap(
    lambda reply: _changed(reply, [*reply, *CLIENT_SIDE, "valid_until"])
)


def _context() -> dict[str, Any]:
    return {"status": 200, "method": "POST", "path": "/v1/pass/status", "correlation_id": "c"}


def _keeping_extra(
    conv: cattrs.Converter, cls: type[Any], *, given: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """cattrs' generated structuring function for ``cls``, keeping unknown keys in ``extra``;
    the fields in ``given`` are passed in, as they are to a reader."""
    known = frozenset(field.name for field in attrs.fields(cls)) - _convert._CLIENT_SIDE
    as_given: dict[str, Any] = {
        name: override(struct_hook=lambda value, _: value) for name in ("extra", *given)
    }
    structure_fields = make_dict_structure_fn(cls, conv, **as_given)

    def structure(data: Any, _: Any = cls, **values: Any) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        extra = {key: value for key, value in data.items() if key not in known}
        return structure_fields({**data, "extra": extra, **values}, cls)

    return structure


def _arrays_only(typ: Any, conv: cattrs.Converter) -> Callable[[Any, Any], list[Any]]:
    structure_items = list_structure_factory(typ, conv)

    def structure(value: Any, _: Any) -> list[Any]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        items: list[Any] = structure_items(value, typ)
        return items

    return structure


@functools.cache
def _cattrs() -> tuple[cattrs.Converter, dict[type[Any], Callable[..., Any]]]:
    """cattrs' own generated hooks, with detailed validation and the SDK's hooks for plain
    values, statuses, timestamps and dates: the reply models, and each pass class's function.

    They build models with ``__init__``, which validates a holder as user input: the holders
    of the replies below are valid as such, so that only the contract decides.
    """
    conv = cattrs.Converter()
    for primitive in (str, int, float, bool):
        conv.register_structure_hook(primitive, _convert._strict)
    conv.register_structure_hook(PassStatus, _convert._status)
    conv.register_structure_hook(dt.datetime, _convert._aware_datetime)
    conv.register_structure_hook(dt.date, _convert._date)
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, _arrays_only)
    for model in (Holder, EncryptionKey, EncryptionKeySet, CardToken):
        conv.register_structure_hook(model, _keeping_extra(conv, model))
    passes = {
        cls: _keeping_extra(conv, cls, given=("idempotency_key", "replayed"))
        for cls in _convert.PASS_TYPES.values()
    }
    passes[UnknownPass] = _keeping_extra(
        conv, UnknownPass, given=("idempotency_key", "replayed", "type", "raw")
    )
    return conv, passes


def _by_cattrs(data: Any, cls: type[Any], **given: Any) -> Any:
    """What cattrs' hooks make of ``data``, or the type of what they raise; ``given`` are the
    values a pass takes from its request."""
    conv, passes = _cattrs()
    structure = passes.get(cls) or conv.get_structure_hook(cls)
    try:
        return structure(data, cls, **given)
    except Exception as error:
        return type(error)


def _assert_same(read: Any, expected: Any) -> None:
    assert type(read) is type(expected)
    assert read == expected
    assert repr(read) == repr(expected)
    for field in attrs.fields(type(read)):  # fields left out of == (extra, raw...) too
        left, right = getattr(read, field.name), getattr(expected, field.name)
        if attrs.has(type(left)):
            _assert_same(left, right)
        else:
            assert left == right, field.name
            assert type(left) is type(right), field.name


@given(data=pass_replies, replayed=st.booleans(), key=st.none() | st.text(max_size=3))
def test_a_pass_is_read_as_cattrs_reads_it(
    data: dict[str, Any], replayed: bool, key: str | None
) -> None:
    kind = data.get("type")
    cls = _convert.PASS_TYPES.get(kind, UnknownPass) if isinstance(kind, str) else UnknownPass
    client_side: dict[str, Any] = {"idempotency_key": key, "replayed": replayed}
    if cls is UnknownPass:
        unknown_type = kind if isinstance(kind, str) else ""
        expected = _by_cattrs(data, cls, **client_side, type=unknown_type, raw=dict(data))
    else:
        expected = _by_cattrs(data, cls, **client_side)
    try:
        read = _convert.structure_pass(
            data, replayed=replayed, idempotency_key=key, context=_context
        )
    except UnexpectedResponseError as error:
        assert isinstance(expected, type), f"cattrs read it: {expected!r}"
        assert error.status == 200  # noqa: PT017 (whether it raises depends on the example)
        return
    _assert_same(read, expected)


def _read_as_cattrs_reads(data: dict[str, Any], cls: type[Any]) -> tuple[Any, Any] | None:
    """``structure(data, cls)`` against cattrs: both refuse it (``None``), or both read it alike
    (what each read)."""
    expected = _by_cattrs(data, cls)
    try:
        read = _convert.structure(data, cls, **_context())
    except UnexpectedResponseError:
        assert isinstance(expected, type), f"cattrs read it: {expected!r}"
        return None
    _assert_same(read, expected)
    return read, expected


@given(data=_changed(TOKEN, [*TOKEN, "extra", "new"]))
def test_a_card_token_is_read_as_cattrs_reads_it(data: dict[str, Any]) -> None:
    _read_as_cattrs_reads(data, CardToken)


@given(
    keys=st.lists(_changed(KEY, [*KEY, "expires_at", "new"]), max_size=3),
    extra=st.dictionaries(st.sampled_from(["next_rotation", "extra"]), values, max_size=1),
)
def test_a_key_set_is_read_as_cattrs_reads_it(
    keys: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    both = _read_as_cattrs_reads({"keys": keys, **extra}, EncryptionKeySet)
    if both is not None:
        read, expected = both
        for got, want in zip(read.keys, expected.keys, strict=True):
            _assert_same(got, want)


@pytest.mark.parametrize("keys", [{}, "", "ab", {"kid": "k1"}])
def test_a_key_set_whose_keys_are_not_an_array_is_refused(keys: Any) -> None:
    assert isinstance(_by_cattrs({"keys": keys}, EncryptionKeySet), type)
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure({"keys": keys}, EncryptionKeySet, **_context())
    assert str(caught.value) == (
        f"reply does not match EncryptionKeySet: expected an array, got {type(keys).__name__}"
        " @ reply.keys [POST /v1/pass/status; correlation_id=c]"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data_allowance_mb", True),
        ("data_allowance_mb", 1.0),
        ("data_allowance_mb", "1024"),
        ("iccid", 89),
        ("iccid", None),
        ("plan_id", False),
        ("status", 1),
        ("created_at", "2026-01-01T00:00:00"),
        ("valid_until", 20270101),
        ("holder", ["Ada"]),
        ("metadata", {"crm": 42}),
    ],
)
def test_a_wrong_type_is_refused_as_cattrs_refuses_it(field: str, value: Any) -> None:
    reply = PASSES[2] | {"valid_until": PASSES[1]["valid_until"], field: value}
    assert isinstance(_by_cattrs(reply, _convert.PASS_TYPES["esim"]), type)
    with pytest.raises(
        UnexpectedResponseError, match=rf"^reply does not match EsimPass: .*{field}"
    ):
        _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)


def test_a_pass_reply_is_read_to_exact_values() -> None:
    reply = PASSES[0] | {"status": "paused", "badge": "gold"}
    read = _convert.structure_pass(reply, replayed=True, idempotency_key="k", context=_context)
    assert isinstance(read, PriorityPass)
    assert read.status == "paused"
    assert isinstance(read.status, PassStatus)
    assert read.holder == Holder(
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        date_of_birth=dt.date(1815, 12, 10),
    )
    assert read.created_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert read.metadata == {"crm": "42"}
    assert (read.extra, read.idempotency_key, read.replayed) == ({"badge": "gold"}, "k", True)


def test_an_unknown_pass_type_keeps_the_whole_reply() -> None:
    read = _convert.structure_pass(PASSES[3], replayed=False, idempotency_key=None, context=dict)
    assert isinstance(read, UnknownPass)
    assert (read.type, read.extra, read.raw) == ("new_kind", {"anything": [1]}, PASSES[3])


def test_a_bad_field_is_named_by_its_path() -> None:
    reply = PASSES[0] | {"holder": HOLDER | {"last_name": 7}}
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)
    assert str(caught.value) == (
        "reply does not match PriorityPass: expected str, got int @ reply.holder.last_name"
        " [POST /v1/pass/status; correlation_id=c]"
    )
    assert caught.value.path == "/v1/pass/status"


def test_a_reply_is_read_as_sent_not_validated_as_user_input() -> None:
    odd_holder = HOLDER | {"email": "not an email", "first_name": "A" * 300, "country": "Mars"}
    reply = PASSES[0] | {"holder": odd_holder}
    read = _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)
    assert read.holder is not None
    assert (read.holder.email, read.holder.first_name, read.holder.country) == (
        "not an email",
        "A" * 300,
        "Mars",
    )


def test_a_rejected_reply_is_explained_by_the_contract_not_by_user_input_rules() -> None:
    reply = PASSES[0] | {"holder": HOLDER | {"email": "not an email"}, "membership_number": 5}
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)
    assert str(caught.value) == (
        "reply does not match PriorityPass: expected str, got int @ reply.membership_number"
        " [POST /v1/pass/status; correlation_id=c]"
    )


def test_every_bad_field_is_named_by_its_path() -> None:
    reply = PASSES[2] | {
        "holder": HOLDER | {"last_name": 7, "date_of_birth": "soon"},
        "iccid": None,
        "created_at": "2026-01-01T00:00:00",
    }
    del reply["status"]
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)
    assert str(caught.value) == (
        "reply does not match EsimPass: required field missing @ reply.status; "
        "expected str, got int @ reply.holder.last_name; "
        "Invalid isoformat string: 'soon' @ reply.holder.date_of_birth; "
        "timestamp has no UTC offset @ reply.created_at; "
        "expected str, got NoneType @ reply.iccid"
        " [POST /v1/pass/status; correlation_id=c]"
    )


def test_a_bad_item_of_a_list_is_named_by_its_index() -> None:
    reply = {"keys": [KEY, KEY | {"kid": None}, KEY | {"expires_at": 5}]}
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure(reply, EncryptionKeySet, **_context())
    assert str(caught.value) == (
        "reply does not match EncryptionKeySet: expected str, got NoneType @ reply.keys[1].kid; "
        "expected an RFC 3339 timestamp, got int @ reply.keys[2].expires_at"
        " [POST /v1/pass/status; correlation_id=c]"
    )


def test_a_reader_is_shown_in_tracebacks() -> None:
    reply = PASSES[0] | {"holder": HOLDER | {"last_name": 7}}
    with pytest.raises(UnexpectedResponseError) as caught:
        _convert.structure_pass(reply, replayed=False, idempotency_key=None, context=_context)
    assert caught.value.__cause__ is not None
    frames = traceback.extract_tb(caught.value.__cause__.__traceback__)
    assert [(frame.filename, frame.line) for frame in frames[-1:]] == [
        ("<loyaltylayer reader loyaltylayer._models.PriorityPass>", "raise _Rejected(_errors)")
    ]


@attrs.frozen(kw_only=True)
class OptionalWithAnotherDefault:
    name: str | None = "unnamed"


@attrs.frozen(kw_only=True)
class ClientSideNotGiven:
    name: str
    replayed: bool = False


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            OptionalWithAnotherDefault,
            r"^OptionalWithAnotherDefault\.name: a reply field is required or None$",
        ),
        (ClientSideNotGiven, r"^ClientSideNotGiven\.replayed: a reader has no value for it$"),
    ],
)
def test_a_reply_model_a_reader_cannot_fill_is_refused(model: type[Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _convert._reader(model)
