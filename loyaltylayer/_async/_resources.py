"""The API's resources: ``client.cards`` and ``client.passes``, and their raw-response twins.

Each method validates its input before anything is sent, calls the transport, and turns the
reply into a typed model. The work is done by a private method returning an
:class:`APIResponse` (the reply, and how to parse it); the public method parses it, and
``client.with_raw_response.<resource>.<method>`` hands it over as it is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Coroutine, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import _rules
from .._cardmath import CARD_TYPES
from .._cards import choose_key, encrypt_card, import_key
from .._convert import structure, structure_pass, unstructure
from .._errors import (
    BadRequestError,
    LoyaltyLayerError,
    UnexpectedResponseError,
    status_error,
)
from .._models import (
    BatchItem,
    BatchResult,
    Card,
    CardToken,
    EncryptionKeySet,
    Holder,
    HolderUpdate,
    Pass,
    PassRequest,
    check_id,
    check_idempotency_key,
    check_reference_and_metadata,
    raise_if_invalid,
)
from .._options import Channel
from .._raw import APIResponse
from .._secrets import Secret
from .._transport import Response, calls_as, new_idempotency_key

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

__all__ = ["AsyncCards", "AsyncCardsWithRawResponse", "AsyncPasses", "AsyncPassesWithRawResponse"]

_KEYS_MAX_AGE = 3600.0
_BATCH_PATH = "/v1/pass/batch-create"
_ENROL_TOKEN = frozenset({"enrol_token"})


def _rekeyed(key: str) -> str:
    """The key for the one retry after a key rotation: the card is re-encrypted, so the body
    differs and the first key cannot be reused (kept within the 255-character limit)."""
    rekeyed = f"{key}.rekeyed"
    if len(rekeyed) <= _rules.IDEMPOTENCY_KEY_MAX:
        return rekeyed
    return "rk_" + hashlib.sha256(key.encode()).hexdigest()


def _context(response: Response, path: str) -> dict[str, Any]:
    return {
        "status": response.status,
        "method": "POST",
        "path": path,
        "correlation_id": response.correlation_id,
        "idempotency_key": response.idempotency_key,
    }


def _pass_from(response: Response, path: str) -> Pass:
    return structure_pass(
        response.data,
        replayed=response.replayed,
        idempotency_key=response.idempotency_key,
        context=partial(_context, response, path),
    )


def _batch(
    requests: Iterable[PassRequest], *, limit: int | None
) -> tuple[list[PassRequest], list[str]]:
    """The requests of a batch, checked, and each one's idempotency key (generated unless the
    request has one)."""
    items = list(requests)
    errors: dict[str, str] = {}
    if not items:
        errors["requests"] = "must not be empty"
    elif limit is not None and len(items) > limit:
        errors["requests"] = (
            f"must be at most {limit} with with_raw_response (one HTTP request); "
            "passes.batch_create takes any number"
        )
    for index, item in enumerate(items):
        if not isinstance(item, PassRequest):
            errors[f"requests[{index}]"] = "must be a loyaltylayer.PassRequest"
    raise_if_invalid(errors)
    return items, [item.idempotency_key or new_idempotency_key() for item in items]


def _read_chunk(
    response: Response, items: list[PassRequest], keys: list[str], chunk: range
) -> list[BatchItem]:
    """The items of one batch-create reply, created or failed, in input order."""
    context = _context(response, _BATCH_PATH)
    data = response.data
    results = data.get("results") if isinstance(data, Mapping) else None
    by_index: dict[int, Mapping[str, Any]] = {}
    if isinstance(results, list):
        for result in results:
            if isinstance(result, Mapping) and isinstance(result.get("index"), int):
                by_index[result["index"]] = result
    out: list[BatchItem] = []
    for position, index in enumerate(chunk):
        result = by_index.get(position)
        item_context = context | {"idempotency_key": keys[index]}
        item = partial(BatchItem, index=index, request=items[index], idempotency_key=keys[index])
        if result is None:
            missing = UnexpectedResponseError(
                f"batch reply has no result for item {position}", **item_context
            )
            out.append(item(error=missing))
        elif result.get("status") == "created":
            replayed = result.get("replayed") is True
            try:
                created = structure_pass(
                    result.get("pass"),
                    replayed=replayed,
                    idempotency_key=keys[index],
                    context=partial(dict, item_context),
                )
            except LoyaltyLayerError as bad_reply:
                out.append(item(error=bad_reply))
            else:
                out.append(item(pass_=created, replayed=replayed))
        else:
            body = result.get("error")
            body = body if isinstance(body, Mapping) else {}
            code = body.get("code")
            item_context.pop("status")
            status = code if isinstance(code, int) else 400
            out.append(item(error=status_error(status, body, **item_context)))
    return out


class _CardKeys:
    """The card-encryption keys last fetched, with the one chosen and when to fetch them again:
    shared by a client's ``cards`` and those of its ``with_options`` views."""

    def __init__(self) -> None:
        self.current: tuple[EncryptionKeySet, RSAKey, float] | None = None
        self.lock: asyncio.Lock | None = None


class AsyncCards:
    """Card tokenization: a card goes in encrypted, a single-use ``enrol_token`` comes out."""

    def __init__(self, channel: Channel, keys: _CardKeys | None = None) -> None:
        self._channel = channel
        self._keys = keys or _CardKeys()

    def _over(self, channel: Channel) -> AsyncCards:
        """These cards sending through ``channel``, with the same keys."""
        return AsyncCards(channel, self._keys)

    async def encryption_keys(self) -> EncryptionKeySet:
        """Fetch the API's current card-encryption keys (a JWK Set; two during a rotation).

        The keys fetched here are also the ones :meth:`tokenize` encrypts with from now on.
        """
        return (await self._encryption_keys()).parse()

    async def _encryption_keys(self) -> APIResponse[EncryptionKeySet]:
        path = "/v1/card/encryption-keys"
        response = await self._channel.request("GET", path)
        context = _context(response, path) | {"method": "GET"}
        keys = structure(response.data, EncryptionKeySet, **context)
        max_age = _KEYS_MAX_AGE
        expiries = [k.expires_at for k in keys.keys if k.expires_at is not None]
        if expiries:
            left = (min(expiries) - dt.datetime.now(dt.UTC)).total_seconds()
            max_age = max(0.0, min(max_age, left))
        chosen = import_key(choose_key(keys))
        self._keys.current = (keys, chosen, asyncio.get_running_loop().time() + max_age)
        return APIResponse(response, lambda: keys)

    async def tokenize(
        self,
        card: Card,
        plan_id: str,
        card_type: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> CardToken:
        """Encrypt ``card`` and exchange it for an ``enrol_token`` to create a pass with.

        ``card_type`` is inferred from the card number when not given. The encryption keys are
        fetched once and cached (until the earliest ``expires_at``, at most an hour); if the
        server says the key was retired, they are fetched again and the card re-encrypted, once.
        """
        return (
            await self._tokenize(card, plan_id, card_type, idempotency_key=idempotency_key)
        ).parse()

    async def _tokenize(
        self,
        card: Card,
        plan_id: str,
        card_type: str | None,
        *,
        idempotency_key: str | None,
    ) -> APIResponse[CardToken]:
        errors: dict[str, str] = {}
        if not isinstance(card, Card):
            errors["card"] = "must be a loyaltylayer.Card"
        check_id(errors, "plan_id", plan_id)
        if card_type is None and isinstance(card, Card):
            card_type = card.card_type
            if card_type is None:
                errors["card_type"] = "cannot be inferred from the card number; pass it"
        elif card_type is not None and card_type not in CARD_TYPES:
            errors["card_type"] = f"must be one of {', '.join(CARD_TYPES)}"
        check_idempotency_key(errors, "idempotency_key", idempotency_key)
        raise_if_invalid(errors)
        key = idempotency_key or new_idempotency_key()
        try:
            return await self._tokenize_once(card, plan_id, card_type, key, refresh_keys=False)
        except BadRequestError as error:
            if error.error != "invalid_encryption_key":
                raise
        return await self._tokenize_once(card, plan_id, card_type, _rekeyed(key), refresh_keys=True)

    async def _tokenize_once(
        self, card: Card, plan_id: str, card_type: str | None, key: str, *, refresh_keys: bool
    ) -> APIResponse[CardToken]:
        path = "/v1/card/tokenize"
        rsa_key = await self._encryption_key(refresh=refresh_keys)
        body = {
            "encrypted_value": Secret(encrypt_card(card, rsa_key)),
            "plan_id": plan_id,
            "card_type": card_type,
        }
        response = await self._channel.request(
            "POST", path, body=body, idempotency_key=key, secret_fields=_ENROL_TOKEN
        )
        return APIResponse(
            response, partial(structure, response.data, CardToken, **_context(response, path))
        )

    async def _encryption_key(self, *, refresh: bool) -> RSAKey:
        keys = self._keys
        if keys.lock is None:
            keys.lock = asyncio.Lock()
        async with keys.lock:
            now = asyncio.get_running_loop().time()
            if refresh or keys.current is None or now >= keys.current[2]:
                await self._encryption_keys()
            assert keys.current is not None
            return keys.current[1]


class AsyncPasses:
    """Lounge passes and eSIMs: create (alone or in batches), read, update, cancel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def create(
        self,
        *,
        plan_id: str,
        holder: Holder,
        enrol_token: str | None = None,
        reference: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Pass:
        """Create one pass. Its class follows the plan's type (``PriorityPass``, ``EsimPass``...).

        The same ``idempotency_key`` (generated unless given) is sent on every retry, so a retry
        after a lost reply returns the pass made the first time instead of a second one.
        """
        return (
            await self._create(
                plan_id=plan_id,
                holder=holder,
                enrol_token=enrol_token,
                reference=reference,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        ).parse()

    async def _create(
        self,
        *,
        plan_id: str,
        holder: Holder,
        enrol_token: str | None,
        reference: str | None,
        metadata: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> APIResponse[Pass]:
        request = PassRequest(
            plan_id=plan_id,
            holder=holder,
            enrol_token=enrol_token,
            reference=reference,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        path = "/v1/pass/create"
        body = unstructure(request)
        body.pop("idempotency_key", None)
        response = await self._channel.request(
            "POST", path, body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )
        return APIResponse(response, partial(_pass_from, response, path))

    async def batch_create(self, requests: Iterable[PassRequest]) -> BatchResult:
        """Create any number of passes: sent in chunks of at most 100, concurrently, paced.

        Every item gets its own idempotency key (generated unless the request has one), so a
        retried chunk never makes a second pass. Items come back in input order, each created
        or failed with its typed error; a chunk that fails as a whole fails each of its items.
        The chunks are batch calls: an interactive call of the same budget goes ahead of them.
        """
        items, keys = _batch(requests, limit=None)
        size = _rules.MAX_BATCH
        chunks = [
            range(start, min(start + size, len(items))) for start in range(0, len(items), size)
        ]
        with calls_as("batch"):
            results = await asyncio.gather(
                *(self._send_chunk(items, keys, chunk) for chunk in chunks)
            )
        return BatchResult(items=[item for chunk_items in results for item in chunk_items])

    async def _send_chunk(
        self, items: list[PassRequest], keys: list[str], chunk: range
    ) -> list[BatchItem]:
        try:
            response = await self._post_chunk(items, keys, chunk)
        except LoyaltyLayerError as error:
            return [
                BatchItem(index=i, request=items[i], idempotency_key=keys[i], error=error)
                for i in chunk
            ]
        return _read_chunk(response, items, keys, chunk)

    def _post_chunk(
        self, items: list[PassRequest], keys: list[str], chunk: range
    ) -> Coroutine[Any, Any, Response]:
        wire = []
        for index in chunk:
            body = unstructure(items[index])
            body["idempotency_key"] = keys[index]
            wire.append(body)
        return self._channel.request(
            "POST", _BATCH_PATH, body={"passes": wire}, idempotency_key=new_idempotency_key()
        )

    async def _batch_create_one_request(
        self, requests: Iterable[PassRequest]
    ) -> APIResponse[BatchResult]:
        items, keys = _batch(requests, limit=_rules.MAX_BATCH)
        chunk = range(len(items))
        response = await self._post_chunk(items, keys, chunk)
        return APIResponse(
            response, lambda: BatchResult(items=_read_chunk(response, items, keys, chunk))
        )

    async def status(self, pass_id: str) -> Pass:
        """The pass as it is now."""
        return (await self._status(pass_id)).parse()

    async def _status(self, pass_id: str) -> APIResponse[Pass]:
        errors: dict[str, str] = {}
        check_id(errors, "pass_id", pass_id)
        raise_if_invalid(errors)
        path = "/v1/pass/status"
        response = await self._channel.request("POST", path, body={"pass_id": pass_id})
        return APIResponse(response, partial(_pass_from, response, path))

    async def update(
        self,
        pass_id: str,
        *,
        holder: HolderUpdate | None = None,
        reference: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Pass:
        """Change the holder's details, the reference or the metadata; only what is given."""
        return (
            await self._update(
                pass_id,
                holder=holder,
                reference=reference,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        ).parse()

    async def _update(
        self,
        pass_id: str,
        *,
        holder: HolderUpdate | None,
        reference: str | None,
        metadata: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> APIResponse[Pass]:
        errors: dict[str, str] = {}
        check_id(errors, "pass_id", pass_id)
        if holder is not None and not isinstance(holder, HolderUpdate):
            errors["holder"] = "must be a loyaltylayer.HolderUpdate"
        check_reference_and_metadata(errors, "", reference, metadata)
        check_idempotency_key(errors, "idempotency_key", idempotency_key)
        if holder is None and reference is None and metadata is None:
            errors["update"] = "give at least one of holder, reference, metadata"
        raise_if_invalid(errors)
        body: dict[str, Any] = {"pass_id": pass_id}
        if holder is not None:
            body["holder"] = unstructure(holder)
        if reference is not None:
            body["reference"] = reference
        if metadata is not None:
            body["metadata"] = dict(metadata)
        path = "/v1/pass/update"
        response = await self._channel.request(
            "POST", path, body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )
        return APIResponse(response, partial(_pass_from, response, path))

    async def cancel(
        self, pass_id: str, reason: str | None = None, *, idempotency_key: str | None = None
    ) -> Pass:
        """Cancel the pass. A second cancel raises :class:`AlreadyCancelledError`."""
        return (await self._cancel(pass_id, reason, idempotency_key=idempotency_key)).parse()

    async def _cancel(
        self, pass_id: str, reason: str | None, *, idempotency_key: str | None
    ) -> APIResponse[Pass]:
        errors: dict[str, str] = {}
        check_id(errors, "pass_id", pass_id)
        if reason is not None and (not isinstance(reason, str) or len(reason) > _rules.REASON_MAX):
            errors["reason"] = f"must be a string of at most {_rules.REASON_MAX} characters"
        check_idempotency_key(errors, "idempotency_key", idempotency_key)
        raise_if_invalid(errors)
        body: dict[str, Any] = {"pass_id": pass_id}
        if reason is not None:
            body["reason"] = reason
        path = "/v1/pass/cancel"
        response = await self._channel.request(
            "POST", path, body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )
        return APIResponse(response, partial(_pass_from, response, path))


class AsyncCardsWithRawResponse:
    """``client.cards``, each method returning the HTTP reply with its model: an
    :class:`APIResponse` (``.parse()`` gives what the plain method returns)."""

    def __init__(self, cards: AsyncCards) -> None:
        self._cards = cards

    async def encryption_keys(self) -> APIResponse[EncryptionKeySet]:
        """``cards.encryption_keys()``, with its reply."""
        return await self._cards._encryption_keys()

    async def tokenize(
        self,
        card: Card,
        plan_id: str,
        card_type: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> APIResponse[CardToken]:
        """``cards.tokenize()``, with the reply of its tokenize request."""
        return await self._cards._tokenize(
            card, plan_id, card_type, idempotency_key=idempotency_key
        )


class AsyncPassesWithRawResponse:
    """``client.passes``, each method returning the HTTP reply with its model: an
    :class:`APIResponse` (``.parse()`` gives what the plain method returns)."""

    def __init__(self, passes: AsyncPasses) -> None:
        self._passes = passes

    async def create(
        self,
        *,
        plan_id: str,
        holder: Holder,
        enrol_token: str | None = None,
        reference: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> APIResponse[Pass]:
        """``passes.create()``, with its reply."""
        return await self._passes._create(
            plan_id=plan_id,
            holder=holder,
            enrol_token=enrol_token,
            reference=reference,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def batch_create(self, requests: Iterable[PassRequest]) -> APIResponse[BatchResult]:
        """``passes.batch_create()`` for at most 100 requests (one HTTP request), with its
        reply. A failure of the whole request raises its error instead of failing each item."""
        return await self._passes._batch_create_one_request(requests)

    async def status(self, pass_id: str) -> APIResponse[Pass]:
        """``passes.status()``, with its reply."""
        return await self._passes._status(pass_id)

    async def update(
        self,
        pass_id: str,
        *,
        holder: HolderUpdate | None = None,
        reference: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> APIResponse[Pass]:
        """``passes.update()``, with its reply."""
        return await self._passes._update(
            pass_id,
            holder=holder,
            reference=reference,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def cancel(
        self, pass_id: str, reason: str | None = None, *, idempotency_key: str | None = None
    ) -> APIResponse[Pass]:
        """``passes.cancel()``, with its reply."""
        return await self._passes._cancel(pass_id, reason, idempotency_key=idempotency_key)
