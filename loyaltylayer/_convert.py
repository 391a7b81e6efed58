"""The one cattrs converter: wire JSON to typed models and back.

Replies are read tolerantly: fields this SDK does not know are kept in ``extra``, unknown pass
types become :class:`UnknownPass`, unknown statuses stay strings. Types are read strictly
(cattrs' default hooks would turn ``None`` into ``"None"``), so a reply that breaks the
contract raises :class:`UnexpectedResponseError` with a path to the bad field, never a bare
``KeyError`` and never a silently wrong value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
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

converter = cattrs.Converter()


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


def _status(value: Any, _: type[Any]) -> PassStatus:
    if not isinstance(value, str):
        raise TypeError(f"expected a status string, got {type(value).__name__}")
    return PassStatus(value)


for _primitive in (str, int, float, bool):
    converter.register_structure_hook(_primitive, _strict)
converter.register_structure_hook(PassStatus, _status)
converter.register_structure_hook(dt.datetime, _aware_datetime)
converter.register_structure_hook(dt.date, _date)
converter.register_unstructure_hook(dt.date, dt.date.isoformat)


def _keeping_extra(cls: type[T]) -> Callable[[Any, type[T]], T]:
    """A structure hook that reads the known fields and keeps every other key in ``extra``."""
    known = frozenset(a.name for a in attrs.fields(cls)) - _CLIENT_SIDE  # type: ignore[arg-type]
    base = make_dict_structure_fn(cls, converter)

    def structure_one(data: Any, _: type[T]) -> T:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        fields = {k: v for k, v in data.items() if k in known}
        fields["extra"] = {k: v for k, v in data.items() if k not in known}
        return base(fields, cls)

    return structure_one


for _model in (Holder, EncryptionKey, EncryptionKeySet, CardToken, *PASS_TYPES.values()):
    converter.register_structure_hook(_model, _keeping_extra(_model))

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


def structure(data: Any, cls: type[T], **context: Any) -> T:
    """Read a reply body as ``cls``; ``context`` (method, path, ids) goes on the error."""
    token = reading_server_data.set(True)
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        raise UnexpectedResponseError(
            f"reply does not match {cls.__name__}: {_describe(exc)}", **context
        ) from exc
    finally:
        reading_server_data.reset(token)


def structure_pass(data: Any, *, replayed: bool, **context: Any) -> Pass:
    """Read a pass object as the class its ``type`` names (``UnknownPass`` for new types).

    The request's ``idempotency_key`` (from ``context``) and ``replayed`` go on the pass.
    """
    if not isinstance(data, Mapping):
        raise UnexpectedResponseError(
            f"reply does not match Pass: expected an object, got {type(data).__name__}", **context
        )
    kind = data.get("type")
    cls = PASS_TYPES.get(kind) if isinstance(kind, str) else None
    idempotency_key = context.get("idempotency_key")
    if cls is not None:
        parsed = structure(data, cls, **context)
        return attrs.evolve(parsed, idempotency_key=idempotency_key, replayed=replayed)
    common = {a.name for a in attrs.fields(Pass)} - _CLIENT_SIDE
    known = {k: v for k, v in data.items() if k in common}
    known["type"] = kind if isinstance(kind, str) else ""
    unknown = structure(known, Pass, **context)
    common_fields = attrs.asdict(unknown, recurse=False)
    common_fields.update(idempotency_key=idempotency_key, replayed=replayed, raw=dict(data))
    return UnknownPass(**common_fields)


def unstructure(value: Any) -> Any:
    return converter.unstructure(value)
