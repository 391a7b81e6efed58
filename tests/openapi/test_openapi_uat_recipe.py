"""docs/openapi.md's UAT recipe, run as written against a sandbox: it passes and changes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from openapi_support import SandboxHttp

from loyaltylayer.sandbox import SandboxConfig, SandboxThread

RECIPE = Path(__file__).resolve().parents[2] / "docs" / "openapi.md"


def _recipe_commands() -> dict[str, str]:
    """The recipe's shell commands by their first word, continuation lines joined."""
    text = RECIPE.read_text(encoding="utf-8")
    block = text.split("## Checking your UAT against it", 1)[1].split("```console", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
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
