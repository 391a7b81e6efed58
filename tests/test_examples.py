"""The examples in examples/ run as documented, against the embedded sandbox."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import test_utils

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_legacy_sync_script_enrolls_the_demo_file() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "examples/legacy_sync.py", "--sandbox"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
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
