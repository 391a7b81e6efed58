"""Per-call options: what ``client.with_options(...)`` checks, and the channel resources send on.

A ``with_options`` client is a view: the same transport (session, token, limiter, connection
pool) with other :class:`RequestOptions`. Making one costs a few small objects and no request.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import attrs

from ._models import raise_if_invalid
from ._transport import RequestOptions, Response, Transport

__all__ = ["NOT_GIVEN", "Channel", "NotGiven", "check_request_options", "evolve_options"]


class NotGiven(enum.Enum):
    """The default of a ``with_options`` argument: keep the client's value (``None`` is a
    value there: ``deadline=None`` means no deadline)."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN

PRIORITIES = ("interactive", "batch")

OWNED_HEADERS = frozenset(
    {
        "authorization",
        "idempotency-key",
        "x-correlation-id",
        "accept",
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
    }
)
"""Headers the pipeline sets itself: the token, the retry-safe key, the id support asks for,
and the framing of the JSON body."""

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
"""The characters of a header name (RFC 9110 §5.6.2)."""


def check_request_options(
    errors: dict[str, str], *, timeout: object, max_retries: object, deadline: object
) -> None:
    """What is wrong with the options every client and ``with_options`` take, into ``errors``."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        errors["timeout"] = "must be a positive number of seconds"
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        errors["max_retries"] = "must be a whole number, 0 or more"
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0
    ):
        errors["deadline"] = "must be a positive number of seconds, or None"


def _check_headers(errors: dict[str, str], headers: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(headers, Mapping):
        errors["extra_headers"] = "must be a mapping of header names to strings"
        return ()
    checked: list[tuple[str, str]] = []
    for name, value in headers.items():
        field = f"extra_headers[{name}]" if isinstance(name, str) else "extra_headers"
        if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
            errors["extra_headers"] = "header names must be HTTP tokens (letters, digits, -...)"
        elif name.lower() in OWNED_HEADERS:
            errors[field] = "is set by the SDK itself and cannot be replaced"
        elif not isinstance(value, str) or not all(" " <= c <= "~" or c == "\t" for c in value):
            errors[field] = "must be a string of printable ASCII characters (no line breaks)"
        else:
            checked.append((name, value))
    return tuple(checked)


def evolve_options(
    options: RequestOptions,
    *,
    timeout: float | NotGiven,
    max_retries: int | NotGiven,
    deadline: float | NotGiven | None,
    priority: object,
    extra_headers: Mapping[str, str] | NotGiven,
) -> RequestOptions:
    """``options`` with the values given changed; raises :class:`ValidationError` naming each
    bad one. Extra headers are added to the ones ``options`` has (a name given again replaces)."""
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("timeout", timeout),
            ("max_retries", max_retries),
            ("deadline", deadline),
            ("priority", priority),
        )
        if value is not NOT_GIVEN
    }
    errors: dict[str, str] = {}
    merged = attrs.asdict(options, filter=lambda a, _: a.init, recurse=False) | changes
    check_request_options(
        errors,
        timeout=merged["timeout"],
        max_retries=merged["max_retries"],
        deadline=merged["deadline"],
    )
    if merged["priority"] not in PRIORITIES:
        errors["priority"] = f"must be one of {', '.join(PRIORITIES)}"
    if extra_headers is not NOT_GIVEN:
        added = _check_headers(errors, extra_headers)
        replaced = {name.lower() for name, _ in added}
        kept = tuple(h for h in options.extra_headers if h[0].lower() not in replaced)
        changes["extra_headers"] = kept + added
    raise_if_invalid(errors)
    if "timeout" in changes:
        changes["timeout"] = float(changes["timeout"])
    return attrs.evolve(options, **changes)


@attrs.frozen
class Channel:
    """What resources send through: the client's transport, with the options of the client or
    of a ``with_options`` view, and whether its calls make telemetry spans."""

    transport: Transport
    options: RequestOptions
    traced: bool = True

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        idempotency_key: str | None = None,
        secret_fields: frozenset[str] = frozenset(),
    ) -> Coroutine[Any, Any, Response]:
        return self.transport.request(
            method,
            path,
            body=body,
            idempotency_key=idempotency_key,
            secret_fields=secret_fields,
            options=self.options,
            traced=self.traced,
        )
