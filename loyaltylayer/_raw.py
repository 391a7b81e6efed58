"""``APIResponse``: what ``client.with_raw_response.<resource>.<method>()`` returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from ._transport import Response

__all__ = ["APIResponse"]

T = TypeVar("T")

_UNPARSED = object()


class APIResponse(Generic[T]):
    """The HTTP reply a call ended with, and :meth:`parse` for the typed model it carries.

    Each call returns its own, so concurrent calls never see each other's (the client keeps no
    "last response"). A method that sends more than one request describes the one its result
    comes from: ``cards.tokenize`` the tokenize request, not the key fetch it may need first.
    Failed calls raise the same typed errors, with the same details, as without
    ``with_raw_response``.
    """

    __slots__ = ("_parse", "_parsed", "_response")

    def __init__(self, response: Response, parse: Callable[[], T]) -> None:
        self._response = response
        self._parse = parse
        self._parsed: object = _UNPARSED

    def __repr__(self) -> str:
        return (
            f"<APIResponse {self.status} correlation_id={self.correlation_id}"
            f" attempts={self.attempts}>"
        )

    def parse(self) -> T:
        """The typed model (``Pass``, ``CardToken``...), built on the first call; raises
        :class:`UnexpectedResponseError` when the reply does not follow the contract."""
        if self._parsed is _UNPARSED:
            self._parsed = self._parse()
        return self._parsed  # type: ignore[return-value]

    @property
    def status(self) -> int:
        """The HTTP status (2xx: errors are raised)."""
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        """The reply's headers (case-insensitive)."""
        return self._response.headers

    @property
    def correlation_id(self) -> str:
        """The id the SDK sent as ``X-Correlation-ID`` on every attempt: quote it to support."""
        return self._response.correlation_id

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` sent (``None`` for reads)."""
        return self._response.idempotency_key

    @property
    def replayed(self) -> bool:
        """Whether the server replayed the answer it gave an earlier request with the key."""
        return self._response.replayed

    @property
    def attempts(self) -> int:
        """HTTP attempts the call made, its retries included."""
        return self._response.attempts

    @property
    def lease_wait(self) -> float:
        """Seconds the call waited for the rate limiter, over all its attempts."""
        return self._response.lease_wait

    @property
    def elapsed(self) -> float:
        """Seconds from the call to its reply: waits, attempts and retries included."""
        return self._response.elapsed
