"""The API's error bodies, worded exactly as the integration guide prints them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ApiError",
    "already_cancelled",
    "canonical_fault_body",
    "invalid_pass_id",
    "invalid_request",
    "rate_limited",
]


class ApiError(Exception):
    """An answer other than 200; raised anywhere in a handler and turned into the JSON body.

    ``fields`` maps dotted field paths to what is wrong with them; messages never quote a value.
    """

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        fields: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description
        self.fields = dict(fields) if fields is not None else None
        self.extra = dict(extra) if extra is not None else {}
        self.headers = dict(headers) if headers is not None else {}

    def body(self, correlation_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": self.description,
            "code": self.status,
        }
        body.update(self.extra)
        if self.fields is not None:
            body["fields"] = self.fields
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        return body


def invalid_request(fields: Mapping[str, str]) -> ApiError:
    return ApiError(
        400, "invalid_request", "The request has invalid or missing fields.", fields=fields
    )


def invalid_pass_id() -> ApiError:
    return ApiError(404, "invalid_pass_id", "Invalid pass ID")


def already_cancelled(pass_id: str) -> ApiError:
    return ApiError(409, "already_cancelled", f"Pass {pass_id} is already cancelled.")


def rate_limited(seconds_left: float) -> ApiError:
    """429 with the seconds left of the block, rounded up, in the body and ``Retry-After``."""
    seconds = max(1, math.ceil(seconds_left))
    return ApiError(
        429,
        "rate_limit_exceeded",
        f"Retry after {seconds} seconds",
        extra={"retry_after": seconds},
        headers={"Retry-After": str(seconds)},
    )


_CANONICAL: Mapping[int, tuple[str, str]] = {
    500: ("server_error", "Unexpected error; try again"),
    502: ("server_error", "Provider operation failed."),
    504: ("provider_timeout", "Provider operation failed."),
}


def canonical_fault_body(status: int) -> ApiError:
    """The guide's body for an injected status; 429 is a fresh 60-second block's body."""
    if status == 429:
        return rate_limited(60)
    error, description = _CANONICAL.get(status, ("injected_fault", "Injected fault."))
    return ApiError(status, error, description)
