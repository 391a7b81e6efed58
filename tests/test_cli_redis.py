"""``loyaltylayer enroll --redis-url`` as real processes, against a real redis-server that is
given a bad URL or goes away in the middle of a job."""

from __future__ import annotations

import collections
import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_env import results_rows, run_cli, summary
from redis_server import redis_server
from sandbox_process import SandboxProcess

FIELDS = (
    "card_number",
    "card_expiry",
    "name_on_card",
    "cvv",
    "first_name",
    "last_name",
    "email",
    "reference",
)
PAN = "4111111111111111"
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


def write_input(path: Path, count: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(FIELDS)
        for n in range(count):
            writer.writerow(
                (PAN, "12/29", "ADA LOVELACE", "123", "Ada", f"Lovelace{n}", f"a{n}@x.com", f"R{n}")
            )
    return path


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


def wait_for_pending(results: Path, count: int, process: subprocess.Popen[str]) -> None:
    """Until the results file holds ``count`` pending rows (creates sent), while it runs."""
    deadline = time.monotonic() + 30
    while not (results.exists() and results.read_text(encoding="utf-8").count("pending") >= count):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.02)


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
    source = write_input(tmp_path / "in.csv", 300)
    # Slow creates keep the job in flight when Redis goes.
    sandbox.call(
        "POST", "faults", {"route": "/v1/pass/batch-create", "kind": "latency", "latency": 1.0}
    )
    args = [str(source), "--rate", "100000", "--per", "1"]
    results = tmp_path / "results.jsonl"
    binary = redis_binary()
    with redis_server(binary) as url:
        process = start(sandbox, tmp_path, *args, "--redis-url", url)
        wait_for_pending(results, 1, process)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 4, out + err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"Error: Redis at {url} is unavailable: "), err
    assert "Enrollment summary" in out
    assert "Stopped: the rate limiter failed." in out
    assert "Resume with:" in out
    failures = [row["error"] for row in results_rows(results)[1:] if row.get("status") == "failed"]
    assert failures
    assert all(e["code"] == "RedisUnavailableError" and e["retryable"] for e in failures)

    sandbox.call("DELETE", "faults")
    with redis_server(binary) as url:
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
    sandbox.call(
        "POST", "faults", {"route": "/v1/pass/batch-create", "kind": "latency", "latency": 2.0}
    )
    results = tmp_path / "results.jsonl"
    with redis_server(redis_binary()) as url:
        process = start(sandbox, tmp_path, str(source), "--redis-url", url)
        wait_for_pending(results, 5, process)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 4, out + err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"Error: Redis at {url} is unavailable: "), err
    assert "Stopped: the rate limiter failed." in out
    assert summary(out)["Created"] == "5"
    assert len(sandbox.passes()) == 5
