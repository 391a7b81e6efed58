"""``loyaltylayer enroll --redis-url`` as real processes, against a real redis-server that is
given a bad URL or goes away in the middle of a job."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_env import results_rows, run_cli, summary, write_input
from redis_server import redis_server
from sandbox_process import SandboxProcess

CLIENT = {
    "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
    "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
}


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    server = SandboxProcess("--rate-key", "off")
    yield server
    server.close()


def redis_binary() -> str:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    return binary


def start(sandbox: SandboxProcess, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``loyaltylayer enroll ARGS --plan-id pp-gold`` against ``sandbox``, as a process."""
    return subprocess.Popen(
        [sys.executable, "-m", "loyaltylayer", "enroll", *args, "--plan-id", "pp-gold"],
        cwd=cwd,
        env=os.environ | CLIENT | {"LOYALTYLAYER_BASE_URL": sandbox.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_until_redis_goes(
    sandbox: SandboxProcess, cwd: Path, *args: str, pending: int, latency: float
) -> str:
    """Enroll ARGS with creates slowed by ``latency`` s, and stop Redis once ``pending`` creates
    were sent: the job must stop with exit 4 and say why. What it printed."""
    fault = {"route": "/v1/pass/batch-create", "kind": "latency", "latency": latency}
    sandbox.call("POST", "faults", fault)
    results = cwd / "results.jsonl"
    deadline = time.monotonic() + 30
    with redis_server(redis_binary()) as url:
        process = start(sandbox, cwd, *args, "--redis-url", url)
        while not (results.exists() and results.read_text().count('"pending"') >= pending):
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
    out, err = process.communicate(timeout=60)
    sandbox.call("DELETE", "faults")

    assert process.returncode == 4, out + err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"Error: Redis at {url} is unavailable: "), err
    assert "Stopped: the rate limiter failed." in out
    assert "Resume with:" in out
    return out


def test_a_redis_url_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", 1)
    env = CLIENT | {"LOYALTYLAYER_BASE_URL": "http://127.0.0.1:9"}

    result = run_cli(
        "enroll",
        "in.csv",
        "--plan-id",
        "pp-gold",
        "--redis-url",
        "foo://ops:s3cr3t-pw@redis.internal",
        cwd=tmp_path,
        env=env,
    )

    assert result.exit_code == 3
    assert result.output == (
        "Error: the Redis URL is not valid (it is not shown: it may hold a password); expected "
        "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path\n"
    )
    assert not (tmp_path / "results.jsonl").exists()


def test_redis_going_away_mid_job_stops_it_with_exit_4_and_a_rerun_finishes(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # Paced: most records still wait for a lease, seconds after the first create, when Redis goes.
    args = (str(write_input(tmp_path / "in.csv", 300)), "--rate", "50", "--per", "1")

    run_until_redis_goes(sandbox, tmp_path, *args, pending=1, latency=1.0)

    results = results_rows(tmp_path / "results.jsonl")
    failures = [row["error"] for row in results[1:] if row.get("status") == "failed"]
    assert failures
    assert all(e["code"] == "RedisUnavailableError" and e["retryable"] for e in failures)
    with redis_server(redis_binary()) as url:
        again = start(sandbox, tmp_path, *args, "--redis-url", url)
        out, err = again.communicate(timeout=60)
    assert again.returncode == 0, out + err
    assert int(summary(out)["Already done"]) < 300
    references = collections.Counter(p["reference"] for p in sandbox.passes())
    assert len(references) == 300
    assert set(references.values()) == {1}


def test_redis_going_away_while_creates_are_in_flight_stops_the_job_after_them(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # Every record is tokenized and in its create when Redis goes: no record fails with it, and
    # it is the progress display, asking how long the limiter is blocked, that finds out.
    source = write_input(tmp_path / "in.csv", 5)

    out = run_until_redis_goes(sandbox, tmp_path, str(source), pending=5, latency=6.0)

    assert summary(out)["Created"] == "5"
    assert len(sandbox.passes()) == 5
