"""loyaltylayer: the Python SDK for the LoyaltyLayer travel-rewards API.

``AsyncLoyaltyLayer`` for asyncio code, ``LoyaltyLayer`` for synchronous code (the same
methods, no ``await``), ``loyaltylayer.sandbox`` for a local server to develop against.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._async._client import AsyncLoyaltyLayer
from ._errors import (
    AlreadyCancelledError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExhaustedError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DuplicateRecordError,
    EnrollmentError,
    EventLoopError,
    IdempotencyKeyReusedError,
    LoyaltyLayerError,
    NotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    RequestInProgressError,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
)
from ._models import (
    BatchItem,
    BatchResult,
    Card,
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
from ._portal import SyncInAsyncWarning, shutdown_portal
from ._ratelimit import Limiter, LimiterStats, RateLimit
from ._raw import APIResponse
from ._secrets import Secret
from ._tokencache import TokenCache
from ._version import __version__

if TYPE_CHECKING:
    from ._async._resources import AsyncCards, AsyncPasses
    from ._cards import encrypt_card
    from ._enroll_models import (
        EnrollCheckpoint,
        EnrollOutcome,
        EnrollProgress,
        EnrollRecord,
        MemoryCheckpoint,
    )
    from ._sync import Cards, LoyaltyLayer, Passes
    from ._telemetry import Telemetry
    from .contrib.redis import RedisRateLimiter, RedisTokenCache

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponse",
    "APIStatusError",
    "APITimeoutError",
    "AlreadyCancelledError",
    "AsyncCards",
    "AsyncLoyaltyLayer",
    "AsyncPasses",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchResult",
    "BudgetExhaustedError",
    "Card",
    "CardToken",
    "Cards",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "DuplicateRecordError",
    "EncryptionKey",
    "EncryptionKeySet",
    "EnrollCheckpoint",
    "EnrollOutcome",
    "EnrollProgress",
    "EnrollRecord",
    "EnrollmentError",
    "EsimPass",
    "EventLoopError",
    "Holder",
    "HolderUpdate",
    "IdempotencyKeyReusedError",
    "Limiter",
    "LimiterStats",
    "LoungeKeyPass",
    "LoyaltyLayer",
    "LoyaltyLayerError",
    "MemoryCheckpoint",
    "NotFoundError",
    "Pass",
    "PassRequest",
    "PassStatus",
    "Passes",
    "PriorityPass",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimit",
    "RateLimitError",
    "RedisRateLimiter",
    "RedisTokenCache",
    "RequestInProgressError",
    "Secret",
    "ServerError",
    "SyncInAsyncWarning",
    "Telemetry",
    "TokenCache",
    "UnexpectedResponseError",
    "UnknownPass",
    "ValidationError",
    "__version__",
    "encrypt_card",
    "shutdown_portal",
]

_LAZY = {
    "AsyncCards": "._async._resources",
    "AsyncPasses": "._async._resources",
    "Cards": "._sync",
    "EnrollCheckpoint": "._enroll_models",
    "EnrollOutcome": "._enroll_models",
    "EnrollProgress": "._enroll_models",
    "EnrollRecord": "._enroll_models",
    "LoyaltyLayer": "._sync",
    "MemoryCheckpoint": "._enroll_models",
    "Passes": "._sync",
    "RedisRateLimiter": ".contrib.redis",
    "RedisTokenCache": ".contrib.redis",
    "Telemetry": "._telemetry",
    "encrypt_card": "._cards",
}
"""Names loaded on first use, from the module that defines them: the Redis ones need an
optional extra, and the others bring in what only some programs use (cattrs and the readers
with the resources, card encryption, the sync facade, the enrollment job's models)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loyaltylayer' has no attribute {name!r}")
