"""What a sandbox is made of: credentials, plans, limits and lifetimes (all frozen at start)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ._clients import ClientRegistration

__all__ = [
    "DEFAULT_CLIENTS",
    "DEFAULT_PLANS",
    "LOUNGE_TYPES",
    "Plan",
    "SandboxConfig",
    "load_config_file",
    "plans_from",
]

LOUNGE_TYPES = frozenset({"priority_pass", "lounge_key"})
"""Plan types whose passes need an ``enrol_token`` (the card-linked lounge memberships)."""


def _non_negative_int(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Plan.{attribute.name} must be a non-negative integer")


def _positive_number(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"SandboxConfig.{attribute.name} must be a positive number")


@attrs.frozen(kw_only=True)
class Plan:
    """A ``plan_id`` mapping: the pass type it makes and the values that type carries.

    ``type`` may be any string: a type the SDK does not know yet gets the common pass fields only,
    which is how the SDK's handling of unknown pass types is exercised.
    """

    type: str = attrs.field(validator=attrs.validators.instance_of(str))
    data_allowance_mb: int | None = attrs.field(default=None, validator=_non_negative_int)
    visits: int | None = attrs.field(default=None, validator=_non_negative_int)
    validity_days: int | None = attrs.field(default=None, validator=_non_negative_int)

    def __attrs_post_init__(self) -> None:
        if self.type == "esim" and self.data_allowance_mb is None:
            # An esim pass always carries its allowance: without one it would break the contract.
            raise ValueError("Plan.data_allowance_mb is required for an esim plan")

    @property
    def needs_enrol_token(self) -> bool:
        return self.type in LOUNGE_TYPES

    @classmethod
    def from_json(cls, plan_id: str, raw: object) -> Plan:
        """A plan from its config-file form: ``{"type": "esim", "data_allowance_mb": 1024}``."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
            raise ValueError(f"plan {plan_id!r}: expected an object with a string 'type'")
        unknown = set(raw) - {"type", "data_allowance_mb", "visits", "validity_days"}
        if unknown:
            raise ValueError(f"plan {plan_id!r}: unknown keys {sorted(unknown)}")
        return cls(**dict(raw))


DEFAULT_CLIENTS: Mapping[str, str] = {"sandbox-client": "sandbox-secret"}
DEFAULT_PLANS: Mapping[str, Plan] = {
    "pp-gold": Plan(type="priority_pass"),
    "lk-standard": Plan(type="lounge_key"),
    "esim-5gb": Plan(type="esim", data_allowance_mb=5120),
}


def plans_from(value: Mapping[str, Plan | Mapping[str, Any]]) -> dict[str, Plan]:
    """Accept plans as :class:`Plan` objects or their JSON form."""
    return {
        plan_id: plan if isinstance(plan, Plan) else Plan.from_json(plan_id, plan)
        for plan_id, plan in value.items()
    }


def _clients_from(value: Mapping[str, str]) -> dict[str, str]:
    clients = dict(value)
    for client_id, secret in clients.items():
        if not isinstance(client_id, str) or not client_id or not isinstance(secret, str):
            raise ValueError("SandboxConfig.clients maps non-empty client_id strings to secrets")
    return clients


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise ValueError(f"SandboxConfig.{attribute.name} must be one of {', '.join(choices)}")

    return check


def _port(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("SandboxConfig.port must be an integer from 0 to 65535")


def _rate_limit(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("SandboxConfig.rate_limit must be a positive integer")


def _registered(
    instance: SandboxConfig,
    _attribute: attrs.Attribute[Mapping[str, ClientRegistration]],
    value: Mapping[str, ClientRegistration],
) -> None:
    for client_id, registration in value.items():
        if not isinstance(registration, ClientRegistration):
            raise ValueError("SandboxConfig.registrations maps client ids to ClientRegistration")
        if registration.public_key is None and client_id not in instance.clients:
            raise ValueError(
                f"SandboxConfig.registrations: {client_id!r} authenticates with a secret, "
                "and has none in SandboxConfig.clients"
            )


def _background_rate(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("SandboxConfig.background_rate must be a whole number, 0 or more")


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """Everything a sandbox is started with. ``rate_key="off"`` disables rate limiting.

    ``background_rate`` emulates another service on the same IP (``background_ip``): that
    many requests per window, evenly spread, counted by the rate limit like any other.
    ``rate_headers`` adds ``RateLimit-Limit``/``-Remaining``/``-Reset`` to every answer
    (off by default: the guide does not promise them).

    ``clock`` is any ``Callable[[], float]`` returning epoch seconds; ``None`` follows the event
    loop the server runs on (see :class:`~loyaltylayer.sandbox.Clock`).
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_port)
    rate_limit: int = attrs.field(default=100, validator=_rate_limit)
    rate_window: float = attrs.field(default=60.0, validator=_positive_number)
    window_kind: Literal["fixed", "sliding"] = attrs.field(
        default="fixed", validator=_one_of("fixed", "sliding")
    )
    rate_key: Literal["ip", "client_id", "off"] = attrs.field(
        default="ip", validator=_one_of("ip", "client_id", "off")
    )
    block: float = attrs.field(default=60.0, validator=_positive_number)
    background_rate: int = attrs.field(default=0, validator=_background_rate)
    background_ip: str = "127.0.0.1"
    rate_headers: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    token_ttl: float = attrs.field(default=1800.0, validator=_positive_number)
    enrol_token_ttl: float = attrs.field(default=900.0, validator=_positive_number)
    idempotency_ttl: float = attrs.field(default=86400.0, validator=_positive_number)
    seed: int | None = None
    encryption_key_pem: str | bytes | None = attrs.field(default=None, repr=False)
    clients: Mapping[str, str] = attrs.field(
        default=DEFAULT_CLIENTS, converter=_clients_from, repr=lambda c: repr(sorted(c))
    )
    plans: Mapping[str, Plan] = attrs.field(default=DEFAULT_PLANS, converter=plans_from)
    registrations: Mapping[str, ClientRegistration] = attrs.field(
        factory=dict, converter=dict, validator=_registered
    )
    """How clients authenticate at ``/auth/token``, by client id; a client not listed here
    sends its secret from ``clients`` in the JSON body (``client_secret_post``)."""
    clock: Callable[[], float] | None = None
    journal_limit: int = 100_000


def load_config_file(path: str | Path) -> tuple[dict[str, str], dict[str, Plan]]:
    """Read ``{"clients": {id: secret}, "plans": {plan_id: {...}}}``; both keys are optional."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or set(raw) - {"clients", "plans"}:
        raise ValueError(f"{path}: expected an object with only 'clients' and 'plans'")
    clients = raw.get("clients", {})
    plans = raw.get("plans", {})
    if not isinstance(clients, dict) or not all(isinstance(v, str) for v in clients.values()):
        raise ValueError(f"{path}: 'clients' must map client ids to secret strings")
    if not isinstance(plans, dict):
        raise ValueError(f"{path}: 'plans' must be an object")
    return _clients_from(clients), plans_from(plans)
