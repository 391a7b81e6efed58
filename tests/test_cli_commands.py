"""``loyaltylayer token``, ``pass ...``, ``sandbox`` and configuration errors, via CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from loyaltylayer.cli._app import cli
from loyaltylayer.sandbox import SandboxConfig, SandboxThread

HEADER = "card_number,card_expiry,name_on_card,cvv,first_name,last_name,email,reference"
ROW = "4111111111111111,12/29,ADA LOVELACE,123,Ada,Lovelace,ada@example.com,R1"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread(SandboxConfig(rate_key="off")) as server:
        yield server


def run(sandbox: SandboxThread | None, *args: str, secret: str = "sandbox-secret") -> Result:
    env: dict[str, str | None] = {
        "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
        "LOYALTYLAYER_CLIENT_SECRET": secret,
        "LOYALTYLAYER_BASE_URL": sandbox.base_url if sandbox is not None else None,
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def test_token_checks_credentials(sandbox: SandboxThread) -> None:
    ok = run(sandbox, "token")
    refused = run(sandbox, "token", secret="wrong")
    unset = run(None, "token")

    assert ok.exit_code == 0
    assert ok.output == (
        f"Credentials OK: sandbox-client got an access token from {sandbox.base_url} "
        "(not shown) and 1 card encryption key(s).\n"
    )
    assert refused.exit_code == 3
    assert "Error: the API refused the credentials (invalid_client:" in refused.output
    assert unset.exit_code == 3
    assert "Error: set LOYALTYLAYER_BASE_URL in the environment" in unset.output


def test_enroll_with_refused_credentials_exits_3_and_writes_nothing(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text(f"{HEADER}\n{ROW}\n", encoding="utf-8")

    result = run(sandbox, "enroll", "in.csv", "--plan-id", "pp-gold", secret="wrong")

    assert result.exit_code == 3
    assert "check LOYALTYLAYER_CLIENT_ID and LOYALTYLAYER_CLIENT_SECRET" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_sandbox_and_base_url_together_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(f"{HEADER}\n{ROW}\n", encoding="utf-8")
    result = run(
        None,
        "enroll",
        str(tmp_path / "in.csv"),
        "--plan-id",
        "p",
        "--sandbox",
        "--base-url",
        "https://api.example.com",
    )

    assert result.exit_code == 2
    assert "Error: give --sandbox or --base-url, not both" in result.output


def test_pass_status_update_cancel(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text(f"{HEADER}\n{ROW}\n", encoding="utf-8")
    assert run(sandbox, "enroll", "in.csv", "--plan-id", "lk-standard").exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    pass_id = rows[-1]["pass_id"]

    status = run(sandbox, "pass", "status", pass_id, "--json")
    updated = run(sandbox, "pass", "update", pass_id, "--email", "ada@new.example.com")
    cancelled = run(sandbox, "pass", "cancel", pass_id, "--reason", "card closed", "--json")
    again = run(sandbox, "pass", "cancel", pass_id)
    missing = run(sandbox, "pass", "status", "pss_doesnotexist")
    bad = run(sandbox, "pass", "update", pass_id, "--country", "Britain")

    assert status.exit_code == 0
    shown = json.loads(status.output)
    assert (shown["pass_id"], shown["type"], shown["status"]) == (pass_id, "lounge_key", "active")
    assert updated.exit_code == 0
    assert "holder.email" in updated.output
    assert "ada@new.example.com" in updated.output
    assert cancelled.exit_code == 0
    assert json.loads(cancelled.output)["status"] == "cancelled"
    assert again.exit_code == 1
    assert "Error: already_cancelled: " in again.output
    assert missing.exit_code == 1
    assert "Error: invalid_pass_id: Invalid pass ID" in missing.output
    assert bad.exit_code == 2
    assert "Error: holder.country: must be an ISO 3166-1 alpha-2 code" in bad.output


def test_sandbox_command_is_the_sandbox_cli() -> None:
    result = CliRunner().invoke(cli, ["sandbox", "--help"])

    assert result.exit_code == 0
    assert "--rate-limit RATE_LIMIT" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loyaltylayer", "enroll", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0
    assert "Usage: loyaltylayer enroll [OPTIONS] INPUT" in result.stdout
