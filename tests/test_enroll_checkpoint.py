"""EnrollProgress, what every checkpoint keeps: made, written and read back, checked."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import loyaltylayer as ll
from loyaltylayer._enroll_models import enrollment_key, next_enrollment_key
from loyaltylayer.sandbox import SandboxConfig, SandboxThread

ROOT = Path(__file__).resolve().parent.parent
KEY = enrollment_key("job", "pp-gold", "R1")
EXPIRES = dt.datetime(2026, 12, 2, 7, 24, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "progress",
    [
        ll.EnrollProgress(key="R1", step="done"),
        ll.EnrollProgress(key="R1", step="done", pass_id="pss_0123456789"),
        ll.EnrollProgress(key="R1", step="tokenize", idempotency_key=next_enrollment_key(KEY)),
        ll.EnrollProgress(
            key="R1",
            step="send",
            idempotency_key=KEY,
            enrol_token="etk_1",
            token_expires_at=EXPIRES,
        ),
    ],
)
def test_progress_round_trips_through_json(progress: ll.EnrollProgress) -> None:
    text = json.dumps(progress.to_json())
    assert ll.EnrollProgress.from_json("R1", json.loads(text)) == progress
    assert "etk_1" not in repr(progress)


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"step": "maybe"}, {"step": "must be done, send or tokenize"}),
        ({}, {"step": "must be done, send or tokenize"}),
        (
            {"step": "tokenize", "idempotency_key": "mine"},
            {"idempotency_key": "must be a key of this engine (enr_...), to tokenize"},
        ),
        (
            {"step": "send", "idempotency_key": KEY},
            {
                "enrol_token": "is required to send",
                "token_expires_at": "must be a datetime, to send",
            },
        ),
        (
            {
                "step": "send",
                "idempotency_key": KEY,
                "enrol_token": "",
                "token_expires_at": "2026-12-02T07:24:10",
            },
            {
                "enrol_token": "must be 1 to 256 characters",
                "token_expires_at": "must have a UTC offset",
            },
        ),
        (
            {"step": "done", "token_expires_at": "soon"},
            {"token_expires_at": "must be an ISO 8601 time"},
        ),
        (
            {"step": 1, "enrol_token": ["x"]},
            {"step": "must be a string", "enrol_token": "must be a string"},
        ),
        ({"step": "done", "pass_id": ""}, {"pass_id": "must be 1 to 256 characters"}),
        ({"step": "done", "pass_id": 7}, {"pass_id": "must be a string"}),
        (
            {"step": "tokenize", "idempotency_key": KEY, "pass_id": "pss_1"},
            {"pass_id": "only a record that is done has a pass"},
        ),
    ],
)
def test_bad_progress_is_refused_naming_each_field(
    data: dict[str, Any], errors: dict[str, str]
) -> None:
    with pytest.raises(ll.ValidationError) as caught:
        ll.EnrollProgress.from_json("R1", data)
    assert caught.value.errors == errors


def test_progress_made_in_code_is_checked_too() -> None:
    with pytest.raises(ll.ValidationError) as caught:
        ll.EnrollProgress(
            key="",
            step="send",
            idempotency_key=KEY,
            enrol_token="etk_1",
            token_expires_at=EXPIRES.replace(tzinfo=None),
        )
    assert caught.value.errors == {
        "key": "must be 1 to 256 characters",
        "token_expires_at": "must have a UTC offset",
    }


def test_next_keys_count_up_from_the_first() -> None:
    assert next_enrollment_key(KEY) == f"{KEY}.2"
    assert next_enrollment_key(f"{KEY}.2") == f"{KEY}.3"


async def test_memory_checkpoint_keeps_the_last_progress_of_each_key() -> None:
    checkpoint = ll.MemoryCheckpoint()
    outcome = ll.EnrollOutcome(index=0, key="R1", status="pending")
    sending = ll.EnrollProgress(
        key="R1", step="send", idempotency_key=KEY, enrol_token="etk_1", token_expires_at=EXPIRES
    )
    await checkpoint.record(outcome, sending)
    assert await checkpoint.recall("R1") == sending
    done = ll.EnrollProgress(key="R1", step="done", pass_id="pss_1")
    await checkpoint.record(outcome, done)
    assert await checkpoint.recall("R1") == done  # with the pass it made
    assert await checkpoint.recall("R2") is None
    assert checkpoint.done_count == 1


def test_the_sync_client_stops_a_job_whose_checkpoint_fails() -> None:
    class Broken(ll.MemoryCheckpoint):
        async def record(self, outcome: ll.EnrollOutcome, progress: ll.EnrollProgress) -> None:
            raise PermissionError(13, "Permission denied", "progress.db")

    with (ROOT / "loyaltylayer" / "sandbox" / "demo_cardholders.csv").open(
        newline="", encoding="utf-8"
    ) as stream:
        rows = list(csv.DictReader(stream))[:3]
    with (
        SandboxThread(SandboxConfig(rate_key="off")) as sandbox,
        ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox.base_url) as client,
    ):
        with pytest.raises(ll.EnrollmentError) as caught:
            list(client.enroll(rows, plan_id="pp-gold", checkpoint=Broken()))
        assert isinstance(caught.value.__cause__, PermissionError)
        assert sandbox.passes() == []
