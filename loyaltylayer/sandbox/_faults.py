"""Faults on demand: which requests get a status error, latency, a reset or commit-then-drop."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["FAULT_KINDS", "Fault", "FaultSet"]

FaultKind = Literal["status", "latency", "reset", "commit_then_drop"]
FAULT_KINDS: tuple[str, ...] = ("status", "latency", "reset", "commit_then_drop")


def _kind(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if value not in FAULT_KINDS:
        raise ValueError(f"Fault.kind must be one of {', '.join(FAULT_KINDS)}")


def _probability(_instance: object, _attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError("Fault.probability must be a number from 0 to 1")


def _count(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.name == "times":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Fault.{attribute.name} must be a non-negative integer")


def _upper(method: object) -> object:
    return method.upper() if isinstance(method, str) else method


def _route(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not (value == "*" or value.startswith("/")):
        raise ValueError("Fault.route must be a path such as /v1/pass/create, or *")


@attrs.frozen(kw_only=True)
class Fault:
    """One fault rule.

    ``route`` is an API path (``"*"`` matches every API path) and ``method`` optionally narrows
    it. Of the requests that match, the first ``after`` pass untouched; each later one fires with
    ``probability`` (drawn from the sandbox's seeded RNG) until the rule has fired ``times`` times
    (``None``: forever).

    Kinds: ``status`` answers ``status`` (with ``body``, or the guide's canonical body for 500, 502,
    504 and 429); ``latency`` waits ``latency`` seconds, then processes the request; ``reset``
    drops the connection with no reply, before processing; ``commit_then_drop`` processes the
    request, keeps its answer for idempotent replay, then drops the connection unanswered.
    """

    route: str = attrs.field(validator=_route)
    kind: FaultKind = attrs.field(validator=_kind)
    method: str | None = attrs.field(
        default=None,
        converter=_upper,
        validator=attrs.validators.optional(attrs.validators.instance_of(str)),
    )
    probability: float = attrs.field(default=1.0, validator=_probability)
    times: int | None = attrs.field(default=None, validator=_count)
    after: int = attrs.field(default=0, validator=_count)
    status: int | None = None
    body: Mapping[str, Any] | None = None
    latency: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind == "status" and (
            isinstance(self.status, bool)
            or not isinstance(self.status, int)
            or not 400 <= self.status <= 599
        ):
            raise ValueError("a status Fault needs status, an error code from 400 to 599")
        if self.kind == "latency" and (
            isinstance(self.latency, bool)
            or not isinstance(self.latency, int | float)
            or not 0 <= self.latency < math.inf
        ):
            raise ValueError("a latency Fault needs latency, a non-negative number of seconds")

    @classmethod
    def from_json(cls, raw: object) -> Fault:
        if not isinstance(raw, dict):
            raise ValueError("a fault is a JSON object")
        known = {a.name for a in attrs.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "body" in raw and raw["body"] is not None and not isinstance(raw["body"], dict):
            raise ValueError("Fault.body must be a JSON object")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define(kw_only=True)
class _Rule:
    id: str
    fault: Fault
    matched: int = 0
    fired: int = 0

    def exhausted(self) -> bool:
        return self.fault.times is not None and self.fired >= self.fault.times


class FaultSet:
    """The active rules, in the order they were added; the first rule that fires wins."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._rules: list[_Rule] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault) -> str:
        rule = _Rule(id=f"flt_{next(self._ids)}", fault=fault)
        self._rules.append(rule)
        return rule.id

    def clear(self) -> None:
        self._rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"id": r.id, **r.fault.to_json(), "matched": r.matched, "fired": r.fired}
            for r in self._rules
        ]

    def pick(self, method: str, path: str) -> Fault | None:
        """The fault this request gets, if any (and count it against the matching rules)."""
        if not self._rules:
            return None
        chosen: Fault | None = None
        for rule in self._rules:
            fault = rule.fault
            if fault.route not in ("*", path) or (fault.method not in (None, method)):
                continue
            if chosen is not None or rule.exhausted():
                continue
            rule.matched += 1
            if rule.matched <= fault.after:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            rule.fired += 1
            chosen = fault
        return chosen
