"""The one cattrs converter: wire JSON to typed models and back.

Replies are read tolerantly: fields this SDK does not know are kept in ``extra``, unknown pass
types become :class:`UnknownPass`, unknown statuses stay strings. Types are read strictly
(cattrs' default hooks would turn ``None`` into ``"None"``), so a reply that breaks the
contract raises :class:`UnexpectedResponseError` with a path to the bad field, never a bare
``KeyError`` and never a silently wrong value.

Every reply is read by a *reader*: a structure hook compiled per model to straight-line code that
checks plain fields and parses the usual timestamps, dates, statuses and string maps inline,
calls the converter's hooks only for nested models and unusual values, and fills the frozen
instance without calling its ``__init__``. cattrs' own generated hooks call one function per
field (two for ``X | None``), which measured as most of the SDK's CPU per request. A reply a
reader rejects is read again by cattrs' hooks with detailed validation, which say where it is
wrong; ``tests/test_convert.py`` checks on random replies that the two accept and build the
same things.
"""

from __future__ import annotations

import datetime as dt
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import CattrsError, ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

from ._errors import UnexpectedResponseError
from ._models import (
    CardToken,
    EncryptionKey,
    EncryptionKeySet,
    EsimPass,
    Holder,
    HolderUpdate,
    LoungeKeyPass,
    Pass,
    PassRequest,
    PassStatus,
    PriorityPass,
    UnknownPass,
    reading_server_data,
)

__all__ = ["PASS_TYPES", "structure", "structure_pass", "unstructure"]

T = TypeVar("T")

PASS_TYPES: dict[str, type[Pass]] = {
    "priority_pass": PriorityPass,
    "lounge_key": LoungeKeyPass,
    "esim": EsimPass,
}

_CLIENT_SIDE = frozenset({"extra", "raw", "idempotency_key", "replayed"})

converter = cattrs.Converter(detailed_validation=False)


def _strict(value: Any, typ: type[Any]) -> Any:
    if typ is float and type(value) is int:
        return float(value)
    if type(value) is not typ:
        raise TypeError(f"expected {typ.__name__}, got {type(value).__name__}")
    return value


def _aware_datetime(value: Any, _: type[Any]) -> dt.datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 timestamp, got {type(value).__name__}")
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return parsed


def _date(value: Any, _: type[Any]) -> dt.date:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO date, got {type(value).__name__}")
    return dt.date.fromisoformat(value[:10])


_STATUSES = {status.value: status for status in PassStatus}


def _status(value: Any, _: type[Any]) -> PassStatus:
    if not isinstance(value, str):
        raise TypeError(f"expected a status string, got {type(value).__name__}")
    return _STATUSES.get(value) or PassStatus(value)


def _not_an_object(data: Any) -> None:
    raise TypeError(f"expected an object, got {type(data).__name__}")


def _split(cls: type[Any], data: Any) -> dict[str, Any]:
    """The known fields of ``data``, with every other key gathered under ``extra``."""
    if not isinstance(data, Mapping):
        _not_an_object(data)
    known = _KNOWN[cls]
    unknown = data.keys() - known
    if not unknown:
        return {**data, "extra": {}}
    fields = {key: value for key, value in data.items() if key in known}
    fields["extra"] = {key: data[key] for key in unknown}
    return fields


def _keeping_extra(conv: cattrs.Converter, cls: type[T]) -> Callable[[Any, type[T]], T]:
    """A cattrs structure hook that keeps every key ``cls`` does not know in ``extra``."""
    base = make_dict_structure_fn(cls, conv)

    def structure_one(data: Any, _: type[T]) -> T:
        return base(_split(cls, data), cls)

    return structure_one


_CHECKED_INLINE = (str, int, bool)
"""Field types a reader checks itself (``type(value) is T``, as ``_strict`` does)."""

_PARSED_INLINE: dict[Any, str] = {
    dt.datetime: "{v} = _p if _type({v}) is _str and (_p := _datetime({v})).tzinfo is not None "
    "else {hook}({v}, {t})",
    dt.date: "{v} = _date({v}[:10]) if _type({v}) is _str else {hook}({v}, {t})",
    PassStatus: "{v} = _statuses[{v}] if _type({v}) is _str and {v} in _statuses "
    "else {hook}({v}, {t})",
    Mapping[str, str]: "{v} = _dict({v}) if _type({v}) is _dict and _only_str(_map(_type, {v})) "
    "and _only_str(_map(_type, {v}.values())) else {hook}({v}, {t})",
}
"""Field types a reader parses itself when the value is the usual one; any other value goes to
the converter's hook, which parses the rest or raises the error that says what is wrong."""


def _reader(cls: type[T], *, given: tuple[str, ...] = ()) -> Callable[..., T]:
    """A structure hook for the reply model ``cls``, compiled to straight-line code.

    It reads what ``_keeping_extra`` reads, to the same values. The fields named in ``given``
    are not read: they are keyword-only parameters of the reader, passed on as they are.

    The instance is filled as ``attrs``' own ``__init__`` fills a frozen class, without calling
    it: its validation is for what a user gives, never for what a server sends, and calling a
    class with a keyword per field cost more than reading the fields.
    """
    hints = typing.get_type_hints(cls)
    known = _KNOWN[cls]
    # Every name of the generated code but the parameters in `given` starts with an underscore,
    # so that no field's name (an attrs init parameter never does) can shadow one.
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_known": known,
        "_Mapping": Mapping,
        "_dict": dict,
        "_str": str,
        "_map": map,
        "_type": type,
        "_isinstance": isinstance,
        "_not_an_object": _not_an_object,
        "_strict": _strict,
        "_new": object.__new__,
        "_setter": object.__setattr__.__get__,
        "_datetime": dt.datetime.fromisoformat,
        "_date": dt.date.fromisoformat,
        "_statuses": _STATUSES,
        "_only_str": frozenset({str}).issuperset,
    }
    parameters = f", *, {', '.join(given)}" if given else ""
    lines = [
        f"def read(_o, _=None{parameters}):",
        "    if _type(_o) is not _dict and not _isinstance(_o, _Mapping):",
        "        _not_an_object(_o)",
        "    _extra = {} if _known.issuperset(_o) else "
        "{_k: _v for _k, _v in _o.items() if _k not in _known}",
    ]
    setting = ["    _r = _new(_cls)", "    _set = _setter(_r)"]
    for index, field in enumerate(attrs.fields(cast(type[Any], cls))):
        if field.name == "extra":
            setting.append("    _set('extra', _extra)")
            continue
        if field.name in given:
            setting.append(f"    _set({field.name!r}, {field.name})")
            continue
        if field.name not in known:
            raise TypeError(f"{cls.__name__}.{field.name}: a reader has no value for it")
        value, typ_name, hook = f"_v{index}", f"_t{index}", f"_h{index}"
        typ = hints[field.name]
        optional = isinstance(typ, types.UnionType) and type(None) in typing.get_args(typ)
        if optional:
            (typ,) = (arg for arg in typing.get_args(typ) if arg is not type(None))
        if field.default is attrs.NOTHING:
            lines.append(f"    {value} = _o[{field.name!r}]")
        elif optional and field.default is None:
            lines.append(f"    {value} = _o.get({field.name!r})")
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: a reply field is required or None")
        namespace[typ_name] = typ
        if typ in _CHECKED_INLINE:
            guard = f"{value} is not None and " if optional else ""
            lines.append(f"    if {guard}_type({value}) is not {typ_name}:")
            lines.append(f"        _strict({value}, {typ_name})  # raises")
        else:
            namespace[hook] = converter.get_structure_hook(typ)
            parse = _PARSED_INLINE.get(typ, "{v} = {hook}({v}, {t})")
            guard = f"if {value} is not None: " if optional else ""
            lines.append(f"    {guard}{parse.format(v=value, hook=hook, t=typ_name)}")
        setting.append(f"    _set({field.name!r}, {value})")
    lines += [*setting, "    return _r"]
    exec(compile("\n".join(lines), f"<loyaltylayer reader {cls.__name__}>", "exec"), namespace)
    read: Callable[..., T] = namespace["read"]
    return read


_READ_BY_TYPE = (Holder, EncryptionKey, EncryptionKeySet, CardToken)
"""Reply models read through the converter (nested ones first); passes have their own readers."""
_TOLERANT = (*_READ_BY_TYPE, *PASS_TYPES.values())
_KNOWN: dict[type[Any], frozenset[str]] = {
    cls: frozenset(a.name for a in attrs.fields(cls)) - _CLIENT_SIDE
    for cls in (*_TOLERANT, UnknownPass)
}


def _is_list(typ: Any) -> bool:
    return typing.get_origin(typ) is list


def _strict_lists(typ: Any, conv: cattrs.Converter) -> Callable[[Any, Any], list[Any]]:
    """cattrs' list hook iterates whatever it is given (``{}`` would read as ``[]``): a list in a
    reply must be a JSON array."""
    read_items = list_structure_factory(typ, conv)

    def structure_list(value: Any, _: Any) -> list[Any]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        items: list[Any] = read_items(value, typ)
        return items

    return structure_list


def _register_parsers(conv: cattrs.Converter) -> None:
    for primitive in (str, int, float, bool):
        conv.register_structure_hook(primitive, _strict)
    conv.register_structure_hook_factory(_is_list, _strict_lists)
    conv.register_structure_hook(PassStatus, _status)
    conv.register_structure_hook(dt.datetime, _aware_datetime)
    conv.register_structure_hook(dt.date, _date)


@functools.cache
def _explaining() -> cattrs.Converter:
    """cattrs' own hooks with detailed validation, to say where a rejected reply is wrong.

    Made on the first rejected reply: building them is most of what importing this module costs.
    """
    conv = cattrs.Converter()
    _register_parsers(conv)
    for model in (*_TOLERANT, UnknownPass):
        conv.register_structure_hook(model, _keeping_extra(conv, model))
    return conv


_register_parsers(converter)
for _model in _READ_BY_TYPE:
    converter.register_structure_hook(_model, _reader(_model))
_FROM_THE_REQUEST = ("idempotency_key", "replayed")
_PASS_READERS: dict[type[Pass], Callable[..., Pass]] = {
    cls: _reader(cls, given=_FROM_THE_REQUEST) for cls in PASS_TYPES.values()
}
_read_unknown_pass = _reader(UnknownPass, given=(*_FROM_THE_REQUEST, "type", "raw"))

converter.register_unstructure_hook(dt.date, dt.date.isoformat)
converter.register_unstructure_hook(
    Holder,
    make_dict_unstructure_fn(
        Holder, converter, _cattrs_omit_if_default=True, extra=override(omit=True)
    ),
)
for _request_model in (HolderUpdate, PassRequest):
    converter.register_unstructure_hook(
        _request_model,
        make_dict_unstructure_fn(_request_model, converter, _cattrs_omit_if_default=True),
    )


def _format(exc: BaseException, typ: Any) -> str:
    if isinstance(exc, TypeError | ValueError) and not isinstance(exc, CattrsError) and exc.args:
        return str(exc)
    return format_exception(exc, typ)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        return "; ".join(cattrs.transform_error(exc, "reply", format_exception=_format))
    return f"{type(exc).__name__}: {exc}"


def _explain(data: Any, cls: type[Any]) -> str:
    """Why ``data`` is not a ``cls``: read again with detailed validation, for the field paths.

    Replies are read without it (it costs a third of the time); it runs only after a failure.
    """
    token = reading_server_data.set(True)
    try:
        _explaining().structure(data, cls)
    except Exception as exc:
        return _describe(exc)
    finally:
        reading_server_data.reset(token)
    return "it does not match the contract"


def _rejected(cls: type[Any], data: Any, context: dict[str, Any]) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        f"reply does not match {cls.__name__}: {_explain(data, cls)}", **context
    )


def structure(data: Any, cls: type[T], **context: Any) -> T:
    """Read a reply body as ``cls``; ``context`` (method, path, ids) goes on the error."""
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        raise _rejected(cls, data, context) from exc


def structure_pass(
    data: Any,
    *,
    replayed: bool,
    idempotency_key: str | None,
    context: Callable[[], dict[str, Any]],
) -> Pass:
    """Read a pass object as the class its ``type`` names (``UnknownPass`` for new types).

    The request's ``idempotency_key`` and ``replayed`` go on the pass. ``context`` gives the
    error's request details; it is called only on failure, since every pass read would
    otherwise build them for nothing.
    """
    if not isinstance(data, Mapping):
        raise UnexpectedResponseError(
            f"reply does not match Pass: expected an object, got {type(data).__name__}",
            **context(),
        )
    kind = data.get("type")
    cls: type[Pass] = PASS_TYPES.get(kind, UnknownPass) if isinstance(kind, str) else UnknownPass
    try:
        if cls is UnknownPass:
            return _read_unknown_pass(
                data,
                idempotency_key=idempotency_key,
                replayed=replayed,
                type=kind if isinstance(kind, str) else "",
                raw=dict(data),
            )
        return _PASS_READERS[cls](data, idempotency_key=idempotency_key, replayed=replayed)
    except Exception as exc:
        raise _rejected(cls, data, context()) from exc


def unstructure(value: Any) -> Any:
    return converter.unstructure(value)
