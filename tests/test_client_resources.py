"""Every endpoint through the async client, against the sandbox over a real socket."""

from __future__ import annotations

import datetime as dt

import pytest
from sdk_env import CLIENT_ID, card, holder, new_pass, paths, running

import loyaltylayer as ll
from loyaltylayer.sandbox import SandboxConfig

pytestmark = pytest.mark.looptime


async def test_tokenize_then_create_a_priority_pass() -> None:
    async with running() as (sandbox, client):
        token = await client.cards.tokenize(card("4111 1111 1111 1111"), plan_id="pp-gold")
        assert (token.card_type, token.card_last4) == ("VISA", "1111")
        assert token.expires_at > dt.datetime.now(dt.UTC)
        created = await client.passes.create(
            plan_id="pp-gold",
            enrol_token=token.enrol_token,
            holder=holder(),
            reference="ref-1",
            metadata={"branch": "north"},
        )
        assert isinstance(created, ll.PriorityPass)
        assert created.status is ll.PassStatus.ACTIVE
        assert created.plan_id == "pp-gold"
        assert created.reference == "ref-1"
        assert created.metadata == {"branch": "north"}
        assert created.holder is not None
        assert created.holder.email == "ada@example.com"
        assert created.membership_number
        assert created.dmc_qr_data
        assert created.idempotency_key is not None
        assert created.idempotency_key.startswith("ll_")
        assert created.replayed is False
        stored = sandbox.passes(client_id=CLIENT_ID)
        assert [p["pass_id"] for p in stored] == [created.pass_id]
        journal = [(e.method, e.path, e.status) for e in sandbox.journal()]
        assert journal == [
            ("POST", "/auth/token", 200),
            ("GET", "/v1/card/encryption-keys", 200),
            ("POST", "/v1/card/tokenize", 200),
            ("POST", "/v1/pass/create", 200),
        ]


@pytest.mark.parametrize(
    ("plan_id", "cls"),
    [("pp-gold", ll.PriorityPass), ("lk-standard", ll.LoungeKeyPass), ("esim-5gb", ll.EsimPass)],
)
async def test_each_plan_type_gives_its_pass_class(plan_id: str, cls: type[ll.Pass]) -> None:
    async with running() as (_, client):
        if plan_id == "esim-5gb":
            created = await client.passes.create(plan_id=plan_id, holder=holder())
        else:
            created = await new_pass(client, plan_id)
        assert type(created) is cls
        assert created.type == {"pp-gold": "priority_pass", "lk-standard": "lounge_key"}.get(
            plan_id, "esim"
        )
        if isinstance(created, ll.EsimPass):
            assert created.data_allowance_mb == 5120
            assert created.activation_code.startswith("LPA:1$")
            assert ll._cardmath.luhn_valid(created.iccid)


async def test_status_update_cancel_and_cancel_again() -> None:
    async with running() as (_, client):
        created = await new_pass(client)
        same = await client.passes.status(created.pass_id)
        assert same == created
        updated = await client.passes.update(
            created.pass_id, holder=ll.HolderUpdate(email="new@example.com"), reference="ref-2"
        )
        assert updated.holder is not None
        assert updated.holder.email == "new@example.com"
        assert updated.holder.first_name == "Ada"
        assert updated.reference == "ref-2"
        cancelled = await client.passes.cancel(created.pass_id, reason="card closed")
        assert cancelled.status == "cancelled"
        assert cancelled.cancelled_at is not None
        with pytest.raises(ll.AlreadyCancelledError) as excinfo:
            await client.passes.cancel(created.pass_id)
        error = excinfo.value
        assert (error.status, error.error) == (409, "already_cancelled")
        assert error.description == f"Pass {created.pass_id} is already cancelled."
        with pytest.raises(ll.AlreadyCancelledError):
            await client.passes.update(created.pass_id, reference="ref-3")


async def test_unknown_pass_id_is_not_found_with_the_guides_body() -> None:
    async with running() as (sandbox, client):
        with pytest.raises(ll.NotFoundError) as excinfo:
            await client.passes.status("pss_nope")
        error = excinfo.value
        assert (error.status, error.error, error.description) == (
            404,
            "invalid_pass_id",
            "Invalid pass ID",
        )
        sent = paths(sandbox.journal(), "/v1/pass/status")
        assert len(sent) == 1
        assert error.correlation_id == sent[0].correlation_id
        assert error.correlation_id is not None
        assert error.correlation_id.startswith("ll-")
        assert error.body["code"] == 404


async def test_spent_enrol_token_is_refused_with_the_guides_text() -> None:
    async with running() as (_, client):
        token = await client.cards.tokenize(card(), plan_id="pp-gold")
        await client.passes.create(
            plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
        )
        with pytest.raises(ll.BadRequestError) as excinfo:
            await client.passes.create(
                plan_id="pp-gold", enrol_token=token.enrol_token, holder=holder()
            )
        assert excinfo.value.error == "invalid_enrol_token"
        assert excinfo.value.description == "Provided enrol_token is invalid or expired"


async def test_unknown_plan_is_a_bad_request() -> None:
    async with running() as (_, client):
        with pytest.raises(ll.BadRequestError) as excinfo:
            await client.passes.create(plan_id="no-such-plan", holder=holder())
        assert excinfo.value.error == "invalid_plan_id"


async def test_bad_credentials_raise_authentication_error_once() -> None:
    async with running() as (sandbox, _):
        async with ll.AsyncLoyaltyLayer(CLIENT_ID, "wrong", sandbox.base_url) as client:
            with pytest.raises(ll.AuthenticationError) as excinfo:
                await client.passes.status("pss_1")
        assert (excinfo.value.error, excinfo.value.description) == (
            "invalid_client",
            "Client authentication failed.",
        )
        assert [e.path for e in sandbox.journal()] == ["/auth/token"]


async def test_encryption_keys_are_a_jwk_set() -> None:
    async with running() as (_, client):
        keys = await client.cards.encryption_keys()
        assert len(keys.keys) == 1
        key = keys.keys[0]
        assert (key.kty, key.use, key.alg) == ("RSA", "enc", "RSA-OAEP-256")
        assert key.kid
        assert key.expires_at is not None


async def test_key_rotation_refetches_keys_once() -> None:
    async with running() as (sandbox, client):
        await client.cards.tokenize(card(), plan_id="pp-gold")
        sandbox.rotate_keys()
        token = await client.cards.tokenize(card(), plan_id="pp-gold")
        assert token.card_last4 == "1111"
        tokenizes = paths(sandbox.journal(), "/v1/card/tokenize")
        assert [e.status for e in tokenizes] == [200, 400, 200]
        assert len(paths(sandbox.journal(), "/v1/card/encryption-keys")) == 2
        assert tokenizes[2].idempotency_key == f"{tokenizes[1].idempotency_key}.rekeyed"


@pytest.mark.parametrize("form", ["jwk", "jwks", "pem", "model", "joserfc"])
async def test_encrypt_card_accepts_every_key_form(form: str) -> None:
    from joserfc.jwk import RSAKey

    async with running() as (sandbox, client):
        keys = await client.cards.encryption_keys()
        jwk = keys.keys[0].as_jwk()
        key: object = {
            "jwk": jwk,
            "jwks": {"keys": [jwk]},
            "pem": RSAKey.import_key(jwk).as_pem(private=False),
            "model": keys,
            "joserfc": RSAKey.import_key(jwk),
        }[form]
        encrypted = ll.encrypt_card(card(), key)  # type: ignore[arg-type]
        assert encrypted.count(".") == 4
        assert "4111111111111111" not in encrypted
        transport = client._transport
        reply = await transport.request(
            "POST",
            "/v1/card/tokenize",
            body={"encrypted_value": encrypted, "plan_id": "pp-gold", "card_type": "VISA"},
            idempotency_key=f"manual-{form}",
        )
        assert reply.data["card_last4"] == "1111"
        assert sandbox.journal()[-1].status == 200


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (5, "is not an RSA public key (JWK, JWK Set or PEM)"),
        (
            "-----BEGIN PUBLIC KEY-----\nnot a key\n",
            "is not an RSA public key (JWK, JWK Set or PEM)",
        ),
        ({"kty": "RSA", "n": "x"}, "is not an RSA public key (JWK, JWK Set or PEM)"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "is not an RSA public key (JWK, JWK Set or PEM)"),
        ({"keys": "x"}, "a JWK Set must have a list of keys"),
        (
            {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
            "no RSA encryption key with a supported algorithm",
        ),
        (
            ll.EncryptionKeySet(keys=[ll.EncryptionKey(kid="k", kty="EC", n="x", e="y")]),
            "no RSA encryption key with a supported algorithm",
        ),
    ],
)
def test_encrypt_card_refuses_a_key_it_cannot_use_naming_the_key(key: object, reason: str) -> None:
    with pytest.raises(ll.ValidationError) as caught:
        ll.encrypt_card(card(), key)  # type: ignore[arg-type]
    assert caught.value.errors == {"key": reason}


async def test_batch_create_any_length_in_input_order_with_partial_failure() -> None:
    async with running() as (sandbox, client):
        tokens = [await client.cards.tokenize(card(), plan_id="pp-gold") for _ in range(4)]
        requests = [
            ll.PassRequest(
                plan_id="pp-gold",
                enrol_token=tokens[i % 4].enrol_token if i < 4 else "bogus-token",
                holder=holder(email=f"user{i}@example.com"),
                reference=f"r{i}",
            )
            for i in range(230)
        ]
        result = await client.passes.batch_create(requests)
        assert [item.index for item in result.items] == list(range(230))
        assert [item.ok for item in result.items] == [True] * 4 + [False] * 226
        for item in result.created:
            assert item.pass_ is not None
            assert item.pass_.reference == f"r{item.index}"
        failure = result.failed[0].error
        assert isinstance(failure, ll.BadRequestError)
        assert failure.error == "invalid_enrol_token"
        batches = paths(sandbox.journal(), "/v1/pass/batch-create")
        assert sorted(e.batch_size or 0 for e in batches) == [30, 100, 100]
        keys = [k for e in batches for k in (e.item_keys or ())]
        assert len(set(keys)) == 230
        assert {item.idempotency_key for item in result.items} == set(keys)
        with pytest.raises(ll.BadRequestError):
            result.raise_for_failures()


async def test_many_clients_of_one_host_share_one_limiter() -> None:
    async with running() as (sandbox, first):
        async with ll.AsyncLoyaltyLayer(CLIENT_ID, "sandbox-secret", sandbox.base_url) as second:
            assert first.limiter is second.limiter
        async with ll.AsyncLoyaltyLayer(
            CLIENT_ID,
            "sandbox-secret",
            sandbox.base_url,
            rate_limit=ll.RateLimit(requests=5, per=1.0),
        ) as third:
            assert third.limiter is not first.limiter


async def test_esim_sandbox_config_plans_are_honoured() -> None:
    config = SandboxConfig(plans={"esim-1gb": {"type": "esim", "data_allowance_mb": 1024}})
    async with running(config) as (_, client):
        created = await client.passes.create(plan_id="esim-1gb", holder=holder())
        assert isinstance(created, ll.EsimPass)
        assert created.data_allowance_mb == 1024
