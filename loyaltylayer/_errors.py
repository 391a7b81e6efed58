"""The exceptions the SDK raises: one tree under :class:`LoyaltyLayerError`.

Every API error carries what support asks for (the correlation id) and what a caller needs to
retry safely (the idempotency key that was sent, ``retry_after``). Messages are built from the
server's error code and description only, so they never contain a card number, a CVV, a JWE,
a token or a client secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AlreadyCancelledError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhaustedError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "DuplicateRecordError",
    "EnrollmentError",
    "EventLoopError",
    "IdempotencyKeyReusedError",
    "LoyaltyLayerError",
    "NotFoundError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RequestInProgressError",
    "ServerError",
    "UnexpectedResponseError",
    "ValidationError",
    "status_error",
]


class LoyaltyLayerError(Exception):
    """Base of every exception the SDK raises."""

    retryable: bool = False
    """Whether sending the same request again (with the same idempotency key) may succeed."""


class ConfigurationError(LoyaltyLayerError, ValueError):
    """The client was configured in a way that cannot work (missing credentials, plain HTTP...)."""


class ClientClosedError(LoyaltyLayerError, RuntimeError):
    """A call was made on a client after ``close()``."""


class EventLoopError(LoyaltyLayerError, RuntimeError):
    """A call cannot run on the event loop it needs.

    A client serves one event loop at a time (it moves to a new loop once the old one has
    stopped): used from a second loop while the first still runs, in another thread, it raises
    this. So does a sync call made on the sync client's own loop thread (it would wait for
    itself), or one cut short because that thread was stopped (``shutdown_portal()``, the
    interpreter exiting).
    """


class ValidationError(LoyaltyLayerError, ValueError):
    """Input rejected before any request was sent.

    ``errors`` maps each bad field (dotted path, e.g. ``holder.email``) to what is wrong with it;
    the messages describe the rule, never the value.
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = dict(errors)
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in self.errors.items()))


class DuplicateRecordError(ValidationError):
    """A record of an enrollment job has the key of an earlier record of the same input.

    Enrolling it would make a second pass for one cardholder (or silently skip it), so it fails
    without a request; ``first_index`` is the position of the earlier record in the input.
    """

    def __init__(self, *, first_index: int) -> None:
        self.first_index = first_index
        super().__init__({"key": f"duplicates the record at index {first_index}"})


class EnrollmentError(LoyaltyLayerError):
    """An enrollment job stopped on an error that is no one record's.

    Its checkpoint, its record source or the engine itself failed; ``__cause__`` is that error
    (the first, when several parts of the job failed before they could be stopped).
    The records in flight were cancelled: each create was checkpointed before it was sent, so
    a rerun of the job replays it rather than making a second pass.
    """


class APIError(LoyaltyLayerError):
    """A request was attempted and did not succeed."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        correlation_id: str | None,
        idempotency_key: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        """How many attempts the request had sent when it failed (its last one included)."""
        self.correlation_id = correlation_id
        self.idempotency_key = idempotency_key
        details = f"correlation_id={correlation_id}"
        if idempotency_key is not None:
            details += f", idempotency_key={idempotency_key}"
        super().__init__(f"{message} [{method} {path}; {details}]")


class APIConnectionError(APIError):
    """No usable reply: the connection failed, was reset, or dropped before the answer.

    The server may or may not have acted on the request; retrying with the same idempotency key
    is safe.
    """

    retryable = True


class APITimeoutError(APIConnectionError):
    """No reply in time (one attempt's timeout, or the overall deadline)."""


class UnexpectedResponseError(APIError):
    """The server answered something that is not what the contract describes."""

    def __init__(self, message: str, *, status: int, **kwargs: Any) -> None:
        self.status = status
        super().__init__(message, **kwargs)


class APIStatusError(APIError):
    """The API answered with an error status and (usually) a JSON error body."""

    def __init__(
        self,
        *,
        status: int,
        error: str,
        description: str,
        body: Mapping[str, Any],
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.status = status
        self.error = error
        self.description = description
        self.body = dict(body)
        self.retry_after = retry_after
        fields = body.get("fields")
        self.fields: dict[str, str] = (
            {str(k): str(v) for k, v in fields.items()} if isinstance(fields, Mapping) else {}
        )
        super().__init__(f"{status} {error}: {description}", **kwargs)


class BadRequestError(APIStatusError):
    """400: the request was rejected; ``fields`` names the bad fields when the server says."""


class AuthenticationError(APIStatusError):
    """401: bad client credentials, or a missing, invalid or expired access token."""


class NotFoundError(APIStatusError):
    """404: no such pass."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the current state."""


class AlreadyCancelledError(ConflictError):
    """409 ``already_cancelled``: the pass was cancelled before."""


class IdempotencyKeyReusedError(ConflictError):
    """409 ``idempotency_key_reused``: the key was used before with another body or endpoint."""


class RequestInProgressError(ConflictError):
    """409 ``request_in_progress``: the first request with this key is still being processed."""

    retryable = True


class RateLimitError(APIStatusError):
    """429: the rate limit was exceeded; the server blocks this IP for ``retry_after`` seconds."""

    retryable = True


class BudgetExhaustedError(RateLimitError):
    """No request of the rate-limit budget can be had before the call's deadline: nothing was sent.

    Raised at once, instead of waiting, when the limiter can tell that no lease frees up in time
    (every lease is taken and the next ones to free up are too far off, or the server's block
    lasts longer). ``retry_after`` is the estimated wait. A web handler maps it to
    ``503 Service Unavailable`` with ``Retry-After``: the budget is busy, the request was fine.
    No 429 was received, so it does not pause the other calls.
    """

    def __init__(
        self,
        *,
        retry_after: float,
        method: str = "-",
        path: str = "-",
        correlation_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            status=429,
            error="budget_exhausted",
            description=(
                "no request of the rate-limit budget is free before the deadline; "
                f"one is expected in {retry_after:.3g} s"
            ),
            body={},
            retry_after=retry_after,
            method=method,
            path=path,
            correlation_id=correlation_id,
            **kwargs,
        )


class ServerError(APIStatusError):
    """500: an unexpected server error."""

    retryable = True


class ProviderUnavailableError(ServerError):
    """502: the upstream provider failed."""


class ProviderTimeoutError(ServerError):
    """504: the upstream provider did not answer in time."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
    500: ServerError,
    502: ProviderUnavailableError,
    504: ProviderTimeoutError,
}

_BY_CODE: dict[str, type[APIStatusError]] = {
    "already_cancelled": AlreadyCancelledError,
    "idempotency_key_reused": IdempotencyKeyReusedError,
    "request_in_progress": RequestInProgressError,
}


def status_error(status: int, body: Mapping[str, Any], **kwargs: Any) -> APIStatusError:
    """The typed exception for an error reply (or an error item of a batch)."""
    error = body.get("error")
    error = error if isinstance(error, str) else f"http_{status}"
    description = body.get("error_description")
    description = description if isinstance(description, str) else "no description"
    cls = _BY_CODE.get(error) if status == 409 else None
    if cls is None:
        cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIStatusError
    return cls(status=status, error=error, description=description, body=body, **kwargs)
