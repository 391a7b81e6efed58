"""The one cattrs converter: wire JSON to typed models and back.

Replies are read tolerantly: fields this SDK does not know are kept in ``extra``, unknown pass
types become :class:`UnknownPass`, unknown statuses stay strings. Types are read strictly
(cattrs' default hooks would turn ``None`` into ``"None"``), so a reply that breaks the
contract raises :class:`UnexpectedResponseError` naming every bad field by its path, never a
bare ``KeyError`` and never a silently wrong value.

Each reply model is read by a structure hook generated for it by :func:`_reader` and
registered with the converter: straight-line code that checks plain fields and parses the usual
timestamps, dates, statuses and string maps inline, and calls the converter's hooks for nested
models and for anything unusual. It fills the frozen instance as attrs' own ``__init__`` does,
without calling it: ``__init__`` validates what a user gives, never what a server sends. Its
source is registered in ``linecache``, as attrs does for the methods it writes, so tracebacks
and debuggers show it.

cattrs' own generated hooks (``make_dict_structure_fn``) read replies to the same values
(``tests/test_convert.py`` checks it on random replies), at about twice the cost per reply,
which the per-request overhead (benchmark figure 3) cannot afford: see ``docs/benchmarks.md``
in the source distribution.

``import loyaltylayer`` does not import this module, nor cattrs: the first client does.
"""

from __future__ import annotations

import datetime as dt
import linecache
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

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
)
from ._secrets import Secret

__all__ = ["PASS_TYPES", "structure", "structure_pass", "unstructure"]

T = TypeVar("T")

PASS_TYPES: dict[str, type[Pass]] = {
    "priority_pass": PriorityPass,
    "lounge_key": LoungeKeyPass,
    "esim": EsimPass,
}

_CLIENT_SIDE = frozenset({"extra", "raw", "idempotency_key", "replayed"})
"""Fields of reply models that the client fills: a key of that name in a reply goes to ``extra``."""

converter = cattrs.Converter(detailed_validation=False)


class _Rejected(Exception):
    """A reply, or a part of one, that breaks the contract: each bad field's path and error."""

    def __init__(self, errors: list[tuple[str, Exception]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{_reason(error)} @ reply{path}" for path, error in errors))


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    if isinstance(error, TypeError | ValueError) and error.args:
        return str(error)
    return type(error).__name__


def _failed(
    errors: list[tuple[str, Exception]] | None, where: str, error: Exception
) -> list[tuple[str, Exception]]:
    """``errors`` and the ``error`` met at ``where`` (``.field`` or ``[index]``); a nested
    model's or list's own errors keep their paths, under ``where``."""
    errors = errors or []
    if isinstance(error, _Rejected):
        errors += [(where + path, nested) for path, nested in error.errors]
    else:
        errors.append((where, error))
    return errors


def _strict(value: Any, typ: type[Any]) -> Any:
    if typ is float and type(value) is int:
        return float(value)
    if typ is str and isinstance(value, Secret):  # a token the transport read as a secret
        return value
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
    """A status this SDK does not know yet is kept as it is, not refused."""
    if not isinstance(value, str):
        raise TypeError(f"expected a status string, got {type(value).__name__}")
    return _STATUSES.get(value) or PassStatus(value)


def _not_an_object(data: Any) -> None:
    raise TypeError(f"expected an object, got {type(data).__name__}")


def _is_list(typ: Any) -> bool:
    return typing.get_origin(typ) is list


def _strict_lists(typ: Any, conv: cattrs.Converter) -> Callable[[Any, Any], list[Any]]:
    """A list in a reply must be a JSON array (cattrs' list hook iterates whatever it is given:
    ``{}`` would read as ``[]``); a bad item is named by its index."""
    (item_type,) = typing.get_args(typ)
    structure_item = conv.get_structure_hook(item_type)

    def structure_list(value: Any, _: Any) -> list[Any]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        items: list[Any] = []
        errors = None
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as error:
                errors = _failed(errors, f"[{index}]", error)
        if errors:
            raise _Rejected(errors)
        return items

    return structure_list


converter.register_structure_hook_factory(_is_list, _strict_lists)
for _primitive in (str, int, float, bool):
    converter.register_structure_hook(_primitive, _strict)
converter.register_structure_hook(PassStatus, _status)
converter.register_structure_hook(dt.datetime, _aware_datetime)
converter.register_structure_hook(dt.date, _date)

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
    """A structure hook for the reply model ``cls``, generated as straight-line code.

    Every field of the model is read from the reply, but ``extra`` (the keys the model does not
    know) and the fields named in ``given``: those are keyword-only parameters of the reader,
    taken as they are. Each field is read in its own ``try``, so a reply with bad fields raises
    one :class:`_Rejected` naming all of them.

    The instance is filled as attrs' own ``__init__`` fills a frozen class (converters applied),
    without calling it: its validation is for what a user gives, never for what a server sends,
    and calling a class with a keyword per field costs more than reading the fields.
    """
    fields = attrs.fields(cast(type[Any], cls))
    hints = typing.get_type_hints(cls)
    # Every name of the generated code but the parameters in `given` starts with an underscore,
    # so that no field's name (an attrs init parameter never does) can shadow one.
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_known": frozenset(field.name for field in fields) - _CLIENT_SIDE,
        "_Mapping": Mapping,
        "_dict": dict,
        "_str": str,
        "_map": map,
        "_type": type,
        "_isinstance": isinstance,
        "_not_an_object": _not_an_object,
        "_strict": _strict,
        "_failed": _failed,
        "_Rejected": _Rejected,
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
        "    _errors = None",
    ]
    setting = ["    _r = _new(_cls)", "    _set = _setter(_r)"]
    for index, field in enumerate(fields):
        if field.name == "extra":
            setting.append("    _set('extra', _extra)")
            continue
        if field.name in given:
            setting.append(f"    _set({field.name!r}, {field.name})")
            continue
        if field.name in _CLIENT_SIDE:
            raise TypeError(f"{cls.__name__}.{field.name}: a reader has no value for it")
        value, typ_name, hook = f"_v{index}", f"_t{index}", f"_h{index}"
        typ = hints[field.name]
        optional = isinstance(typ, types.UnionType) and type(None) in typing.get_args(typ)
        if optional:
            (typ,) = (arg for arg in typing.get_args(typ) if arg is not type(None))
        if field.default is attrs.NOTHING:
            read = [f"{value} = _o[{field.name!r}]"]
        elif optional and field.default is None:
            read = [f"{value} = _o.get({field.name!r})"]
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: a reply field is required or None")
        namespace[typ_name] = typ
        if typ in _CHECKED_INLINE:
            guard = f"{value} is not None and " if optional else ""
            read += [
                f"if {guard}_type({value}) is not {typ_name}:",
                f"    _strict({value}, {typ_name})",
            ]
        else:
            namespace[hook] = converter.get_structure_hook(typ)
            parse = _PARSED_INLINE.get(typ, "{v} = {hook}({v}, {t})")
            guard = f"if {value} is not None: " if optional else ""
            read.append(guard + parse.format(v=value, hook=hook, t=typ_name))
        lines += [
            "    try:",
            *(f"        {line}" for line in read),
            "    except Exception as _e:",
            f"        _errors = _failed(_errors, {'.' + field.name!r}, _e)",
        ]
        if field.converter is not None:  # as __init__ does: a token becomes a Secret
            namespace[f"_c{index}"] = field.converter
            value = f"_c{index}({value})"
        setting.append(f"    _set({field.name!r}, {value})")
    lines += ["    if _errors:", "        raise _Rejected(_errors)", *setting, "    return _r"]
    source = "\n".join(lines)
    filename = f"<loyaltylayer reader {cls.__module__}.{cls.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)
    reader: Callable[..., T] = namespace["read"]
    return reader


for _model in (Holder, EncryptionKey, EncryptionKeySet, CardToken):  # nested models first
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


def _rejected(cls: type[Any], error: Exception, context: dict[str, Any]) -> UnexpectedResponseError:
    why = str(error) if isinstance(error, _Rejected) else _reason(error)
    return UnexpectedResponseError(f"reply does not match {cls.__name__}: {why}", **context)


def structure(data: Any, cls: type[T], **context: Any) -> T:
    """Read a reply body as ``cls``; ``context`` (method, path, ids) goes on the error."""
    try:
        return converter.structure(data, cls)
    except Exception as error:
        raise _rejected(cls, error, context) from error


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
    except Exception as error:
        raise _rejected(cls, error, context()) from error


def unstructure(value: Any) -> Any:
    return converter.unstructure(value)
