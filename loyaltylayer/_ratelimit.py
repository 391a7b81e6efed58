"""Client-side pacing: the server must never count more than N requests in any window of W seconds.

(The lease limiter implementation is added below the interface.)
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager

import attrs

__all__ = ["Limiter", "RateLimit"]


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"RateLimit.{attribute.name} must be positive")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How many requests the API allows per window, and the safety margin we keep on top.

    ``margin`` is the extra time a lease stays taken after its reply, covering clock-rate drift
    between us and the server. It defaults to 1 s per 60 s of window, so a scaled-down window in
    tests and benchmarks keeps the same shape as the real 100-per-minute one.
    """

    requests: int = attrs.field(default=100, validator=_positive)
    per: float = attrs.field(default=60.0, validator=_positive)
    margin: float | None = attrs.field(default=None, validator=_positive)

    @property
    def hold(self) -> float:
        """Seconds a lease stays taken after its request finishes."""
        margin = self.per / 60.0 if self.margin is None else self.margin
        return self.per + margin


class Limiter(abc.ABC):
    """Decides when an HTTP attempt may start. Every attempt of the SDK goes through one.

    Implementations must keep the promise of :class:`RateLimit` whatever the network latency:
    a lease is taken before the request is sent, held while it is in flight and for
    ``RateLimit.hold`` seconds after the reply (or error) arrives.
    """

    @abc.abstractmethod
    def lease(self, *, priority: bool = False) -> AbstractAsyncContextManager[None]:
        """Wait for a free lease (and for any server block to end), hold it for the attempt.

        ``priority`` lets a token request overtake queued calls, so a refresh never waits
        behind a whole batch.
        """

    @abc.abstractmethod
    async def block(self, seconds: float) -> None:
        """The server answered 429: nobody starts a request for ``seconds`` from now.

        A shorter block never shortens a longer one already set.
        """

    @abc.abstractmethod
    async def blocked_for(self) -> float:
        """Seconds left of the current server block; 0.0 when there is none."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release anything the limiter holds (connections of a shared backend)."""
