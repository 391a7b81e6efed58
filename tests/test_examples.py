"""The examples in examples/ run as documented, against the embedded sandbox."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import test_utils
from hosts import unexpected

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=50, check=False
    )


def test_legacy_sync_script_enrolls_the_demo_file() -> None:
    result = run_example("-X", "dev", "-W", "error", "examples/legacy_sync.py", "--sandbox")
    assert (result.returncode, unexpected(result.stderr)) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("one eSIM pass: pss_")
    assert lines[0].endswith("status active")
    assert sum(": pss_" in line for line in lines[1:]) == 47
    assert sum(": failed: " in line for line in lines[1:]) == 3
    assert "4111111111111111" not in result.stdout


async def test_aiohttp_app_creates_and_reads_a_pass() -> None:
    app = load("aiohttp_app").make_app(use_sandbox=True)
    async with test_utils.TestClient(test_utils.TestServer(app)) as http:
        body = {
            "plan_id": "pp-gold",
            "card_number": "4111111111111111",
            "card_expiry": "12/39",
            "name_on_card": "ADA LOVELACE",
            "cvv": "123",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        }
        created = await http.post("/passes", json=body)
        assert created.status == 201
        made = await created.json()
        assert (made["type"], made["status"]) == ("priority_pass", "active")
        found = await http.get(f"/passes/{made['pass_id']}")
        assert (await found.json())["pass_id"] == made["pass_id"]
        missing = await http.get("/passes/pss_missing")
        assert missing.status == 404
        bad = await http.post("/passes", json=body | {"card_number": "4111111111111112"})
        assert bad.status == 400
        assert await bad.json() == {"errors": {"card_number": "fails the Luhn check"}}


def test_sqlite_checkpoint_script_resumes_from_its_database(tmp_path: Path) -> None:
    database = tmp_path / "progress.db"
    result = run_example("examples/sqlite_checkpoint.py", str(database), "--sandbox")
    assert (result.returncode, unexpected(result.stderr)) == (0, "")
    assert result.stdout.splitlines() == [
        "first run: created 47, failed 3",
        "rerun: failed 3, skipped 47",
    ]


async def test_sqlite_checkpoint_survives_a_crash_mid_job(tmp_path: Path) -> None:
    import loyaltylayer as ll
    from loyaltylayer.sandbox import Fault, Sandbox, SandboxConfig

    example = load("sqlite_checkpoint")
    database = tmp_path / "progress.db"
    async with Sandbox(SandboxConfig(rate_key="off")) as sandbox:
        client = ll.AsyncLoyaltyLayer(
            "sandbox-client", "sandbox-secret", sandbox.base_url, max_retries=0
        )
        async with client:
            # The batch's reply is lost after the server made its passes; the job ends there,
            # as one killed before its retry would.
            sandbox.add_fault(Fault(route="/v1/pass/batch-create", kind="commit_then_drop"))
            crashed = example.SqliteCheckpoint(database)
            assert await example.enroll_file(client, crashed, "job-1") == {"failed": 50}
            crashed.close()
            sandbox.clear_faults()
            made = len(sandbox.passes())
            pass_ids = {p["reference"]: p["pass_id"] for p in sandbox.passes()}

            resumed = example.SqliteCheckpoint(database)
            counts = await example.enroll_file(client, resumed, "job-1")
            recalled = await resumed.recall("CUST-1001")
            resumed.close()

    assert made == 47
    assert counts == {"created": 47, "failed": 3}  # replayed by the server, not made again
    assert recalled == ll.EnrollProgress(
        key="CUST-1001", step="done", pass_id=pass_ids["CUST-1001"]
    )
    assert len(sandbox.passes()) == 47


def test_sqlite_checkpoint_works_with_the_sync_client(tmp_path: Path) -> None:
    import loyaltylayer as ll
    from loyaltylayer.sandbox import SandboxConfig, SandboxThread

    example = load("sqlite_checkpoint")
    checkpoint = example.SqliteCheckpoint(tmp_path / "progress.db")
    try:
        with (
            SandboxThread(SandboxConfig(rate_key="off")) as sandbox,
            ll.LoyaltyLayer("sandbox-client", "sandbox-secret", sandbox.base_url) as client,
        ):
            first = example.enroll_file_sync(client, checkpoint, "job-1")
            rerun = example.enroll_file_sync(client, checkpoint, "job-1")
            made = {p["reference"]: p["pass_id"] for p in sandbox.passes()}
    finally:
        checkpoint.close()

    created = {key: pass_id for key, pass_id in first.items() if pass_id is not None}
    assert len(created) == 47
    assert created == made
    assert rerun == first  # the rerun skips them, and reports each one's pass
