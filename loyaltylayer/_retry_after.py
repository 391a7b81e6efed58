"""The longest wait a server may impose: one bound for the transport and every limiter.

The API documents a 60-second block after a 429. A ``Retry-After`` far beyond that is a broken
or hostile server, and honouring it would stall every call of the client (and, with a shared
limiter, of every process of the fleet) for as long as it says: ``retry_after: 1e9`` is about
32 years. Waits up to :data:`MAX_RETRY_AFTER` are honoured, with a warning above
:data:`DOCUMENTED_RETRY_AFTER`; longer ones are cut to it.
"""

from __future__ import annotations

__all__ = ["DOCUMENTED_RETRY_AFTER", "MAX_RETRY_AFTER", "cap_retry_after"]

DOCUMENTED_RETRY_AFTER = 60.0
"""The block the API documents after a 429, in seconds."""
MAX_RETRY_AFTER = 900.0
"""The longest server-sent wait honoured (15 minutes): room for a server that blocks longer
than it documents, short enough that a fleet recovers from a bad value by itself."""


def cap_retry_after(seconds: float) -> float:
    """``seconds``, at most :data:`MAX_RETRY_AFTER` (any number: a huge int, infinity)."""
    return MAX_RETRY_AFTER if seconds > MAX_RETRY_AFTER else float(seconds)
