"""loyaltylayer: the Python SDK for the LoyaltyLayer travel-rewards API.

``AsyncLoyaltyLayer`` for asyncio code, ``LoyaltyLayer`` for synchronous code (the same
methods, no ``await``), ``loyaltylayer.sandbox`` for a local server to develop against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._async._client import AsyncLoyaltyLayer
from ._async._resources import AsyncCards, AsyncPasses
from ._cards import encrypt_card
from ._enroll_models import (
    EnrollCheckpoint,
    EnrollOutcome,
    EnrollProgress,
    EnrollRecord,
    MemoryCheckpoint,
)
from ._errors import (
    AlreadyCancelledError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DuplicateRecordError,
    EnrollmentError,
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
from ._ratelimit import Limiter, RateLimit
from ._sync import Cards, LoyaltyLayer, Passes
from ._tokencache import TokenCache
from ._version import __version__

if TYPE_CHECKING:
    from .contrib.redis import RedisRateLimiter, RedisTokenCache

__all__ = [
    "APIConnectionError",
    "APIError",
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
    "Holder",
    "HolderUpdate",
    "IdempotencyKeyReusedError",
    "Limiter",
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
    "ServerError",
    "SyncInAsyncWarning",
    "TokenCache",
    "UnexpectedResponseError",
    "UnknownPass",
    "ValidationError",
    "__version__",
    "encrypt_card",
    "shutdown_portal",
]

_LAZY = {"RedisRateLimiter", "RedisTokenCache"}


def __getattr__(name: str) -> Any:
    """Names whose imports need an optional extra are loaded on first use."""
    if name in _LAZY:
        from .contrib import redis

        return getattr(redis, name)
    raise AttributeError(f"module 'loyaltylayer' has no attribute {name!r}")
