"""docs/openapi.md's UAT recipe, run as written against a sandbox: it passes and changes nothing;
and its token commands for client_secret_basic and private_key_jwt get a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests
from openapi_support import (
    BASIC_ID,
    BASIC_SECRET,
    JWT_ID,
    JWT_KEY,
    SandboxHttp,
    client_auth_config,
)

from loyaltylayer.sandbox import SandboxConfig, SandboxThread

RECIPE = Path(__file__).resolve().parents[2] / "docs" / "openapi.md"


def _console_blocks() -> list[str]:
    """The console blocks of the UAT section, in order."""
    text = RECIPE.read_text(encoding="utf-8")
    section = text.split("## Checking your UAT against it", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```console\n")[1:]]


def _recipe_commands() -> dict[str, str]:
    """The recipe's shell commands by their first word, continuation lines joined."""
    block = _console_blocks()[0].replace("\\\n", " ")
    commands = [line.removeprefix("$ ").strip() for line in block.splitlines() if line.strip()]
    return {command.split()[0]: command for command in commands}


def test_the_read_only_recipe_passes_against_the_sandbox_and_changes_nothing(
    tmp_path: Path,
) -> None:
    commands = _recipe_commands()
    print_spec, run = commands["python"], commands["st"]
    assert "--include-tag read-only" in run
    # The recipe paces itself under the real rate limit (a minute for a run); this sandbox has
    # none, so the same run goes at full speed.
    run = re.sub(r"--rate-limit \S+", "--rate-limit 100000/m", run)
    with SandboxThread(SandboxConfig(rate_key="off", seed=21)) as sb:
        http = SandboxHttp(sb)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "LOYALTYLAYER_BASE_URL": sb.base_url,
            "LOYALTYLAYER_TOKEN": http.token,
        }
        for command in (print_spec, run):
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        http.session.close()
        # Besides the operations, schemathesis sends a GET to /schemathesis-probe... to learn
        # how the server treats odd input; on a real host it is a 404 and changes nothing.
        called = {
            (entry.method, entry.path)
            for entry in sb.journal()
            if not entry.path.startswith("/schemathesis-probe")
        }
        passes = sb.passes()
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert cases is not None, result.stdout[-3000:]
    assert int(cases[1]) == int(cases[2]) >= 20
    assert called == {
        ("POST", "/auth/token"),
        ("GET", "/v1/card/encryption-keys"),
        ("POST", "/v1/pass/status"),
    }
    assert passes == []
    assert list((tmp_path / "uat-report").glob("junit-*.xml"))


@pytest.mark.parametrize(
    ("block", "client_id", "secret"),
    [(1, BASIC_ID, BASIC_SECRET), (2, JWT_ID, "")],
    ids=["client_secret_basic", "private_key_jwt"],
)
def test_the_other_token_commands_get_a_token(
    block: int, client_id: str, secret: str, tmp_path: Path
) -> None:
    """Each is one command; the basic client's secret is spelled out so curl's ``-u`` sends
    what RFC 6749 asks (the form-urlencoded id and secret)."""
    command = _console_blocks()[block].removeprefix("$ ")
    key = tmp_path / "client-key.pem"
    key.write_bytes(JWT_KEY.as_pem(private=True))
    config = SandboxConfig(rate_key="off", seed=21, **client_auth_config())
    with SandboxThread(config) as sb:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "LOYALTYLAYER_AUTH_URL": sb.base_url,
            "LOYALTYLAYER_CLIENT_ID": client_id,
            "LOYALTYLAYER_CLIENT_SECRET": quote_plus(secret, safe=""),
            "LOYALTYLAYER_PRIVATE_KEY": str(key),
        }
        result = subprocess.run(
            ["bash", "-c", command + '\nprintf %s "$LOYALTYLAYER_TOKEN"'],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        reply = requests.get(
            sb.base_url + "/v1/card/encryption-keys",
            headers={"Authorization": f"Bearer {result.stdout}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        tokens = [(e.status, e.client_id) for e in sb.journal() if e.path == "/auth/token"]
    assert tokens == [(200, client_id)]
