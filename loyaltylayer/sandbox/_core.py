"""One sandbox's moving parts, owned together so a reset can renew them together."""

from __future__ import annotations

import random

from ._clients import AssertionLog
from ._clock import Clock
from ._config import SandboxConfig
from ._faults import FaultSet
from ._idempotency import IdempotencyStore
from ._journal import Journal
from ._keys import KeyRing
from ._ratelimit import RateLimiter
from ._state import State

__all__ = ["Core"]


class Core:
    """Config, clock and keys (kept across resets) plus everything a reset renews.

    Only the server's event loop touches it; the thread runner hops onto that loop first.
    """

    def __init__(self, config: SandboxConfig, clock: Clock, keys: KeyRing) -> None:
        self.config = config
        self.clock = clock
        self.keys = keys
        self.reset()

    def reset(self) -> None:
        config = self.config
        seed = config.seed
        # Separate streams, so adding a fault never changes the ids a seeded run makes.
        ids = random.Random(f"ids:{seed}") if seed is not None else random.Random()
        faults = random.Random(f"faults:{seed}") if seed is not None else random.Random()
        self.state = State(ids)
        self.faults = FaultSet(faults)
        self.journal = Journal(config.journal_limit)
        self.idempotency = IdempotencyStore(config.idempotency_ttl)
        self.assertions = AssertionLog()
        self.limiter: RateLimiter | None = None
        if config.rate_key != "off":
            self.limiter = RateLimiter(
                limit=config.rate_limit,
                window=config.rate_window,
                kind=config.window_kind,
                block=config.block,
                background=config.background_rate,
                background_key=f"ip:{config.background_ip}",
                headers=config.rate_headers,
            )

    def rotate_keys(self) -> str:
        """A fresh active key; the old kid is retired. Returns the new kid."""
        return self.keys.rotate(now=self.clock.now())
