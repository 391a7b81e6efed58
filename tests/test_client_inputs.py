"""Bad input fails before any request, naming the field and never quoting a secret."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sdk_env import CLIENT_ID, CLIENT_SECRET, card, holder, running

import loyaltylayer as ll

pytestmark = pytest.mark.looptime

PAN = "4111111111111111"


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"number": "4111111111111112"}, "card.number", "fails the Luhn check"),
        ({"number": "4111-1111"}, "card.number", "must be 12 to 19 digits"),
        ({"number": "41111111111111x1"}, "card.number", "must be 12 to 19 digits"),
        ({"expiry": "13/29"}, "card.expiry", "must be MM/YY"),
        ({"expiry": "12/2029"}, "card.expiry", "must be MM/YY"),
        ({"expiry": "01/20"}, "card.expiry", "is in the past"),
        ({"cvv": "12"}, "card.cvv", "must be 3 or 4 digits"),
        ({"cvv": "12a"}, "card.cvv", "must be 3 or 4 digits"),
        ({"name": ""}, "card.name", "must be 1 to 128 characters"),
    ],
)
def test_bad_card_names_the_field_without_the_value(
    overrides: dict[str, str], field: str, reason: str
) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        card(**overrides)
    assert excinfo.value.errors == {field: reason}
    for value in overrides.values():
        if len(value) > 3:
            assert value not in str(excinfo.value)


def test_card_repr_masks_pan_and_hides_cvv() -> None:
    c = card("4111 1111 1111 1111", cvv="987")
    assert c.number == PAN
    assert repr(c) == "Card(number='**** 1111', expiry='12/39', name='ADA LOVELACE', cvv='***')"
    assert c.masked == "**** 1111"
    assert c.card_type == "VISA"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"first_name": ""}, "holder.first_name"),
        ({"last_name": "x" * 65}, "holder.last_name"),
        ({"email": "not-an-email"}, "holder.email"),
        ({"phone": "020 7123 4567"}, "holder.phone"),
        ({"country": "UK"}, "holder.country"),
        ({"date_of_birth": "1990-02-30"}, "holder.date_of_birth"),
    ],
)
def test_bad_holder_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        holder(**overrides)
    assert list(excinfo.value.errors) == [field]


@pytest.mark.parametrize("character", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"])
def test_a_control_character_in_a_name_is_refused_without_echoing_it(character: str) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        holder(first_name=f"Gr{character}ace")
    assert excinfo.value.errors == {"holder.first_name": "must not contain control characters"}
    assert character not in str(excinfo.value)


def test_holder_accepts_iso_date_and_all_fields() -> None:
    h = holder(phone="+442071234567", country="GB", date_of_birth="1990-01-31")
    assert h.date_of_birth == dt.date(1990, 1, 31)


async def test_invalid_calls_send_nothing() -> None:
    async with running() as (sandbox, client):
        cases = [
            lambda: client.passes.create(plan_id="", holder=holder()),
            lambda: client.passes.create(
                plan_id="pp-gold", holder=ll.Holder(first_name="A", last_name="B")
            ),
            lambda: client.passes.create(plan_id="pp-gold", holder=holder(), reference="r" * 65),
            lambda: client.passes.create(plan_id="pp-gold", holder=holder(), reference="a\nb"),
            lambda: client.passes.status("pss_1\r\n"),
            lambda: client.passes.create(
                plan_id="pp-gold", holder=holder(), metadata={str(i): "v" for i in range(21)}
            ),
            lambda: client.passes.create(
                plan_id="pp-gold",
                holder=holder(),
                metadata={"k": 1},  # type: ignore[dict-item]
            ),
            lambda: client.passes.create(plan_id="pp-gold", holder=holder(), idempotency_key="é"),
            lambda: client.passes.status(""),
            lambda: client.passes.update("pss_1"),
            lambda: client.passes.update("pss_1", holder=holder()),  # type: ignore[arg-type]
            lambda: client.passes.cancel("pss_1", reason="x" * 256),  # the server's limit
            lambda: client.passes.cancel("pss_1", idempotency_key="  "),  # HTTP strips it
            lambda: client.passes.update("pss_1", reference="r", idempotency_key="k "),
            lambda: client.passes.batch_create([]),
            lambda: client.passes.batch_create(["nope"]),  # type: ignore[list-item]
            lambda: client.cards.tokenize("4111", plan_id="pp-gold"),  # type: ignore[arg-type]
            lambda: client.cards.tokenize(card(), plan_id="pp-gold", card_type="VISAX"),
            lambda: client.cards.tokenize(card("9999999999999995"), plan_id="pp-gold"),
        ]
        expected_fields = [
            {"plan_id"},
            {"holder.email"},
            {"reference"},
            {"reference"},
            {"pass_id"},
            {"metadata"},
            {"metadata"},
            {"idempotency_key"},
            {"pass_id"},
            {"update"},
            {"holder"},
            {"reason"},
            {"idempotency_key"},
            {"idempotency_key"},
            {"requests"},
            {"requests[0]"},
            {"card"},
            {"card_type"},
            {"card_type"},
        ]
        for make_call, fields in zip(cases, expected_fields, strict=True):
            with pytest.raises(ll.ValidationError) as excinfo:
                await make_call()
            assert set(excinfo.value.errors) == fields
        with pytest.raises(ll.ValidationError) as excinfo:
            async for _ in client.enroll([], plan_id="", concurrency=0):
                pass
        assert set(excinfo.value.errors) == {"plan_id", "concurrency"}
        assert sandbox.journal() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "http://api.example.com"}, "base_url must use https"),
        ({"base_url": "ftp://127.0.0.1"}, "base_url must be an absolute http(s) URL"),
        ({"base_url": ""}, "base_url is required"),
        ({"base_url": "https://a.example/?x=1"}, "base_url must not have a query or fragment"),
        ({"auth_url": "http://auth.example.com"}, "auth_url must use https"),
    ],
)
def test_unsafe_or_broken_urls_are_refused(kwargs: dict[str, str], message: str) -> None:
    options = {"base_url": "https://api.example.com"} | kwargs
    with pytest.raises(ll.ConfigurationError, match=re.escape(message)):
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, **options)


def test_plain_http_is_allowed_for_loopback_only() -> None:
    for url in ("http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:2"):
        assert repr(ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url)).endswith(url + ">")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"client_id": ""}, "client_id"),
        ({"client_secret": ""}, "client_secret"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"deadline": -5}, "deadline"),
        ({"rate_limit": 100}, "rate_limit"),
    ],
)
def test_bad_client_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    options = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET} | kwargs
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(base_url="https://api.example.com", **options)
    assert list(excinfo.value.errors) == [field]


@pytest.mark.parametrize(
    ("rate_limit", "close_limiter", "reason"),
    [
        (ll.RateLimit(), "yes", "must be True or False"),
        (ll.RateLimit(), True, "is for a limiter given as rate_limit"),
        (None, True, "is for a limiter given as rate_limit"),
    ],
)
def test_close_limiter_is_only_for_a_limiter_given(
    rate_limit: ll.RateLimit | None, close_limiter: Any, reason: str
) -> None:
    with pytest.raises(ll.ValidationError) as excinfo:
        ll.AsyncLoyaltyLayer(
            CLIENT_ID,
            CLIENT_SECRET,
            "https://api.example.com",
            rate_limit=rate_limit,
            close_limiter=close_limiter,
        )
    assert excinfo.value.errors == {"close_limiter": reason}


def test_rate_limit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="requests"):
        ll.RateLimit(requests=0)
    with pytest.raises(ValueError, match="per"):
        ll.RateLimit(per=-1.0)
    assert ll.RateLimit().hold == 61.0
    assert ll.RateLimit(requests=100, per=2.0).hold == pytest.approx(2.0 + 2.0 / 60.0)


def test_from_env_reads_the_environment_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CLIENT_ID", "CLIENT_SECRET", "BASE_URL", "AUTH_URL", "REDIS_URL"):
        monkeypatch.delenv(f"LOYALTYLAYER_{name}", raising=False)
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_ID", CLIENT_ID)
    with pytest.raises(
        ll.ConfigurationError,
        match="set LOYALTYLAYER_CLIENT_SECRET, LOYALTYLAYER_BASE_URL in the environment",
    ):
        ll.AsyncLoyaltyLayer.from_env()
    monkeypatch.setenv("LOYALTYLAYER_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("LOYALTYLAYER_BASE_URL", "https://api.example.com/")
    client = ll.AsyncLoyaltyLayer.from_env(max_retries=1)
    assert repr(client) == "<AsyncLoyaltyLayer https://api.example.com>"
    assert CLIENT_SECRET not in repr(client._transport)
