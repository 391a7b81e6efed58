"""``loyaltylayer enroll`` as real processes against a sandbox process: kills, faults, blocks.

The sandbox runs as its own process so that it outlives a CLI killed with SIGKILL; passes are
counted on the sandbox's control plane, so "exactly one pass per record" is what the server
holds, not what the CLI believes.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_process import SandboxProcess

CLIENT = {
    "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
    "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
}
FIELDS = ("card_number", "card_expiry", "name_on_card", "cvv", "first_name", "last_name", "email")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    server = SandboxProcess("--rate-key", "off")
    yield server
    server.close()


@pytest.fixture
def fresh(sandbox: SandboxProcess) -> SandboxProcess:
    sandbox.call("POST", "reset")
    return sandbox


def write_input(path: Path, count: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow((*FIELDS, "reference"))
        for n in range(count):
            writer.writerow(
                (
                    "4111111111111111",
                    "12/29",
                    "ADA LOVELACE",
                    "123",
                    "Ada",
                    f"Lovelace{n}",
                    f"ada{n}@example.com",
                    f"R{n:05d}",
                )
            )
    return path


def enroll_args(csv_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loyaltylayer",
        "enroll",
        str(csv_path),
        "--plan-id",
        "pp-gold",
        "--out",
        "results.jsonl",
        "--errors",
        "errors.csv",
        *extra,
    ]


def start(args: list[str], cwd: Path, url: str) -> subprocess.Popen[str]:
    env = os.environ | CLIENT | {"LOYALTYLAYER_BASE_URL": url}
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(args: list[str], cwd: Path, url: str) -> tuple[int, str, str]:
    process = start(args, cwd, url)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_rows(path: Path) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in rows(path)[1:]}


def statuses(path: Path) -> collections.Counter[str]:
    return collections.Counter(row["status"] for row in rows(path)[1:])


def assert_one_pass_each(sandbox: SandboxProcess, count: int) -> None:
    references = collections.Counter(p["reference"] for p in sandbox.passes())
    assert len(references) == count
    assert set(references.values()) == {1}


def test_sigkill_then_rerun_makes_one_pass_per_record(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    args = enroll_args(write_input(tmp_path / "in.csv", 300), "--rate", "100", "--per", "1")
    results = tmp_path / "results.jsonl"
    process = start(args, tmp_path, fresh.url)
    wait_for(lambda: results.exists() and statuses(results)["created"] > 0)
    process.kill()
    process.wait()
    before = statuses(results)
    assert before["created"] < 300
    assert before["pending"] > before["created"]

    code, out, _ = run(args, tmp_path, fresh.url)

    assert code == 0, out
    assert_one_pass_each(fresh, 300)
    final = last_rows(results)
    assert len(final) == 300
    assert {row["status"] for row in final.values()} == {"created"}
    passes = {p["reference"]: p["pass_id"] for p in fresh.passes()}
    assert {key: row["pass_id"] for key, row in final.items()} == passes


def test_commit_then_drop_and_kill_then_rerun_replays(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    fresh.call("POST", "faults", {"route": "/v1/pass/batch-create", "kind": "commit_then_drop"})
    args = enroll_args(write_input(tmp_path / "in.csv", 150), "--rate", "1000", "--per", "1")
    process = start(args, tmp_path, fresh.url)
    wait_for(
        lambda: (
            any(e["fault"] == "commit_then_drop" for e in fresh.journal())
            and len(fresh.passes()) == 150
        )
    )
    process.kill()
    process.wait()
    fresh.call("DELETE", "faults")
    results = tmp_path / "results.jsonl"
    # A batch whose reply was dropped is still pending at the kill, or already created if its
    # retry was replayed first (full-jitter waits can be that short).
    at_kill = last_rows(results)
    unanswered = {k for k, row in at_kill.items() if row["status"] != "created"}
    assert unanswered

    code, out, _ = run(args, tmp_path, fresh.url)

    assert code == 0, out
    assert_one_pass_each(fresh, 150)
    final = last_rows(results)
    assert len(final) == 150
    assert {row["status"] for row in final.values()} == {"created"}
    assert all(final[k]["replayed"] for k in unanswered)
    assert {k: final[k] for k in at_kill.keys() - unanswered} == {
        k: row for k, row in at_kill.items() if k not in unanswered
    }


def test_chaos_every_record_terminal_no_duplicates(fresh: SandboxProcess, tmp_path: Path) -> None:
    for kind, status in (("status", 500), ("status", 502), ("status", 504), ("reset", None)):
        fault: dict[str, Any] = {"route": "*", "kind": kind, "probability": 0.026}
        if status is not None:
            fault["status"] = status
        fresh.call("POST", "faults", fault)
    args = enroll_args(
        write_input(tmp_path / "in.csv", 2000),
        "--rate",
        "100000",
        "--per",
        "1",
        "--concurrency",
        "32",
    )
    started = time.monotonic()
    codes = []
    for _ in range(3):
        code, out, err = run(args, tmp_path, fresh.url)
        assert "Traceback" not in err
        codes.append(code)
        if code == 0:
            break
    elapsed = time.monotonic() - started

    assert codes[-1] == 0, out
    assert set(codes[:-1]) <= {1}
    fired = sum(f["fired"] for f in fresh.call("GET", "faults")["faults"])
    assert fired > 150
    assert_one_pass_each(fresh, 2000)
    final = last_rows(tmp_path / "results.jsonl")
    assert len(final) == 2000
    assert {row["status"] for row in final.values()} == {"created"}
    assert elapsed < 45, elapsed


def test_sigint_drains_in_flight_then_resumes(fresh: SandboxProcess, tmp_path: Path) -> None:
    args = enroll_args(write_input(tmp_path / "in.csv", 300), "--rate", "100", "--per", "1")
    results = tmp_path / "results.jsonl"
    process = start(args, tmp_path, fresh.url)
    wait_for(lambda: results.exists() and statuses(results)["pending"] > 20)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)

    assert process.returncode == 130, out
    assert "Interrupted: finishing the records in flight" in out
    assert "Resume with:" in out
    pending = {row["key"] for row in rows(results)[1:] if row["status"] == "pending"}
    finished = {k for k, row in last_rows(results).items() if row["status"] == "created"}
    assert pending == finished
    assert 0 < len(finished) < 300
    assert len(fresh.passes()) == len(finished)

    code, out, _ = run(args, tmp_path, fresh.url)
    assert code == 0, out
    assert f"Already done  │ {len(finished)}" in out
    assert_one_pass_each(fresh, 300)


def test_server_block_pauses_the_job_and_it_resumes(tmp_path: Path) -> None:
    limited = SandboxProcess("--rate-limit", "30", "--rate-window", "2", "--block", "1")
    try:
        args = enroll_args(write_input(tmp_path / "in.csv", 50), "--rate", "100", "--per", "2")
        code, out, _ = run(args, tmp_path, limited.url)
        journal = limited.journal()
    finally:
        limited.close()

    assert code == 0, out
    assert "paused until" in out
    assert "Created       │ 50" in out
    blocked = [e["time"] for e in journal if e["status"] == 429]
    assert blocked
    starts = [t for i, t in enumerate(blocked) if i == 0 or t - blocked[i - 1] > 0.5]
    assert len(blocked) <= len(starts) * 9
    for t0 in starts:
        during = [e for e in journal if t0 + 0.25 < e["time"] < t0 + 1.0]
        assert during == []


def test_a_duplicate_row_never_undoes_a_created_record(tmp_path: Path) -> None:
    sandbox = SandboxProcess("--rate-key", "off", "--idempotency-ttl", "1")
    try:
        source = write_input(tmp_path / "in.csv", 2)
        with source.open("a", encoding="utf-8") as stream:
            stream.write(
                "4111111111111111,12/29,ADA LOVELACE,123,Ada,Again,again@example.com,R00000\n"
            )
        for attempt in range(3):
            code, _, err = run(enroll_args(source), tmp_path, sandbox.url)
            assert (code, err) == (1, ""), attempt
            time.sleep(1.2)  # the server forgets the idempotency keys in between
        assert_one_pass_each(sandbox, 2)
        created = [r for r in rows(tmp_path / "results.jsonl")[1:] if r["status"] == "created"]
        assert sorted(r["key"] for r in created) == ["R00000", "R00001"]
    finally:
        sandbox.close()
