"""What the sandbox remembers: access tokens, enrol tokens and passes, each per client_id.

Passes are kept in their API shape, so every endpoint and the control plane answer the same
dictionaries; callers always receive copies.
"""

from __future__ import annotations

import datetime as _dt
import random
import string
from typing import Any

import attrs

from loyaltylayer._cardmath import luhn_check_digit

from ._config import Plan
from ._validate import CreateRequest, UpdateRequest

__all__ = ["EnrolToken", "State", "rfc3339"]

_ALNUM = string.ascii_letters + string.digits
_MATCHING_ID = string.ascii_uppercase + string.digits
_SWEEP_EVERY = 1024
_DEFAULT_VALIDITY_DAYS = {"esim": 30}


def rfc3339(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).date().isoformat()


def _copy(pass_: dict[str, Any]) -> dict[str, Any]:
    return {**pass_, "holder": dict(pass_["holder"]), "metadata": dict(pass_["metadata"])}


@attrs.define(kw_only=True)
class EnrolToken:
    client_id: str
    expires_at: float
    used: bool = False


class State:
    """Tokens and passes; all ids come from one RNG, so a seeded sandbox repeats them."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._tokens: dict[str, tuple[str, float]] = {}
        self._enrol: dict[str, EnrolToken] = {}
        self._passes: dict[str, dict[str, dict[str, Any]]] = {}
        self._issued = 0

    def clear(self) -> None:
        self._tokens.clear()
        self._enrol.clear()
        self._passes.clear()

    def _random(self, length: int, alphabet: str = _ALNUM) -> str:
        return "".join(self._rng.choices(alphabet, k=length))

    def _digits(self, length: int) -> str:
        return "".join(self._rng.choices(string.digits, k=length))

    def _count_issue(self, now: float) -> None:
        self._issued += 1
        if self._issued % _SWEEP_EVERY:
            return
        for token in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[token]
        for token in [t for t, e in self._enrol.items() if e.used or e.expires_at <= now]:
            del self._enrol[token]

    def issue_access_token(self, client_id: str, now: float, ttl: float) -> str:
        self._count_issue(now)
        token = "sbx_at_" + self._random(40)
        self._tokens[token] = (client_id, now + ttl)
        return token

    def token_owner(self, token: str) -> tuple[str, float] | None:
        """``(client_id, expires_at)`` of an access token this sandbox issued."""
        return self._tokens.get(token)

    def issue_enrol_token(self, client_id: str, now: float, ttl: float) -> tuple[str, float]:
        self._count_issue(now)
        token = "etk_" + self._random(32)
        self._enrol[token] = EnrolToken(client_id=client_id, expires_at=now + ttl)
        return token, now + ttl

    def enrol_token_usable(self, token: str, client_id: str, now: float) -> bool:
        record = self._enrol.get(token)
        return (
            record is not None
            and record.client_id == client_id
            and not record.used
            and record.expires_at > now
        )

    def consume_enrol_token(self, token: str) -> None:
        self._enrol[token].used = True

    def create_pass(
        self, client_id: str, plan: Plan, request: CreateRequest, now: float
    ) -> dict[str, Any]:
        pass_id = "pss_" + self._random(24)
        stamp = rfc3339(now)
        pass_: dict[str, Any] = {
            "pass_id": pass_id,
            "type": plan.type,
            "status": "active",
            "plan_id": request.plan_id,
            "holder": dict(request.holder),
            "reference": request.reference,
            "metadata": dict(request.metadata),
            "created_at": stamp,
            "updated_at": stamp,
            "cancelled_at": None,
        }
        days = plan.validity_days
        if days is None:
            days = _DEFAULT_VALIDITY_DAYS.get(plan.type, 365)
        valid_until = _date(now + days * 86400.0)
        pass_.update(self._type_fields(plan, pass_id, valid_until))
        self._passes.setdefault(client_id, {})[pass_id] = pass_
        return _copy(pass_)

    def _type_fields(self, plan: Plan, pass_id: str, valid_until: str) -> dict[str, Any]:
        if plan.type in ("priority_pass", "lounge_key"):
            prefix = "PP" if plan.type == "priority_pass" else "LK"
            number = prefix + self._digits(14)
            fields: dict[str, Any] = {
                "membership_number": number,
                "dmc_qr_data": f"DMC1|{prefix}|{number}|{valid_until}|{pass_id}",
                "valid_until": valid_until,
            }
            if plan.type == "lounge_key":
                fields["visits_remaining"] = plan.visits
            return fields
        if plan.type == "esim":
            partial = "8944" + self._digits(14)
            matching_id = "-".join(self._random(5, _MATCHING_ID) for _ in range(4))
            activation = f"LPA:1$smdp.example${matching_id}"
            return {
                "iccid": partial + luhn_check_digit(partial),
                "activation_code": activation,
                "qr_code_data": activation,
                "data_allowance_mb": plan.data_allowance_mb,
                "valid_until": valid_until,
            }
        return {}

    def get_pass(self, client_id: str, pass_id: str) -> dict[str, Any] | None:
        pass_ = self._passes.get(client_id, {}).get(pass_id)
        return None if pass_ is None else _copy(pass_)

    def update_pass(self, client_id: str, request: UpdateRequest, now: float) -> dict[str, Any]:
        pass_ = self._passes[client_id][request.pass_id]
        pass_["holder"].update(request.holder)
        if request.set_reference:
            pass_["reference"] = request.reference
        if request.metadata is not None:
            pass_["metadata"] = dict(request.metadata)
        pass_["updated_at"] = rfc3339(now)
        return _copy(pass_)

    def cancel_pass(self, client_id: str, pass_id: str, now: float) -> dict[str, Any]:
        pass_ = self._passes[client_id][pass_id]
        stamp = rfc3339(now)
        pass_.update(status="cancelled", cancelled_at=stamp, updated_at=stamp)
        return _copy(pass_)

    def passes(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Passes in the order they were made, of one client or of all."""
        if client_id is not None:
            return [_copy(p) for p in self._passes.get(client_id, {}).values()]
        return [_copy(p) for by_id in self._passes.values() for p in by_id.values()]
