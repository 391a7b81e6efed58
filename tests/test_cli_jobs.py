"""``loyaltylayer enroll`` as real processes against a sandbox process: kills, faults, blocks.

The sandbox runs as its own process so that it outlives a CLI killed with SIGKILL; passes are
counted on the sandbox's control plane, so "exactly one pass per record" is what the server
holds, not what the CLI believes.
"""

from __future__ import annotations

import collections
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_env import last_rows, results_rows, summary, write_input
from sandbox_process import SandboxProcess
from waiting import wait_for

CLIENT = {
    "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
    "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    server = SandboxProcess("--rate-key", "off")
    yield server
    server.close()


@pytest.fixture
def fresh(sandbox: SandboxProcess) -> SandboxProcess:
    sandbox.call("POST", "reset")
    return sandbox


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


def start(
    args: list[str], cwd: Path, url: str, limit: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    env = os.environ | CLIENT | {"LOYALTYLAYER_BASE_URL": url}
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )


def run(
    args: list[str], cwd: Path, url: str, limit: Callable[[], None] | None = None
) -> tuple[int, str, str]:
    process = start(args, cwd, url, limit)
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in err
    return process.returncode, out, err


def statuses(path: Path) -> collections.Counter[str]:
    return collections.Counter(row["status"] for row in results_rows(path)[1:] if "key" in row)


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
    pending = {row["key"] for row in results_rows(results)[1:] if row.get("status") == "pending"}
    finished = {k for k, row in last_rows(results).items() if row["status"] == "created"}
    assert pending == finished
    assert 0 < len(finished) < 300
    assert len(fresh.passes()) == len(finished)

    code, out, _ = run(args, tmp_path, fresh.url)
    assert code == 0, out
    assert summary(out)["Already done"] == str(len(finished))
    assert_one_pass_each(fresh, 300)


def test_the_first_sigint_stops_the_job_within_the_records_in_flight(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    # 400 records do not fit in a window of 100: the job is spread, a tokenize every 0.4 s.
    args = enroll_args(write_input(tmp_path / "in.csv", 400), "--rate", "100", "--per", "40")
    results = tmp_path / "results.jsonl"
    process = start(args, tmp_path, fresh.url)
    wait_for(lambda: results.exists() and statuses(results)["pending"] >= 3)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)

    assert process.returncode == 130, out
    table = summary(out)
    created = int(table["Created"])
    # What was in flight: about --concurrency (8) records, and those tokenized before (4 s of
    # slack for the signal to arrive: 10 tokenizes).
    assert 3 <= created <= 3 + 8 + 2 + 10
    assert int(table["Not started"]) == 400 - created
    assert len(fresh.passes()) == created


def test_sigint_before_the_job_starts_exits_130_with_one_line(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    # The card keys come slowly: the command is still checking the credentials at the SIGINT.
    route = "/v1/card/encryption-keys"
    fresh.call("POST", "faults", {"route": route, "kind": "latency", "latency": 4})
    args = enroll_args(write_input(tmp_path / "in.csv", 3))
    process = start(args, tmp_path, fresh.url)
    wait_for(lambda: any(e["path"] == "/auth/token" for e in fresh.journal()))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    fresh.call("DELETE", "faults")

    assert process.returncode == 130, out + err
    assert (out, err) == ("", "Interrupted: rerun the same command to resume.\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    assert fresh.passes() == []


def test_server_block_pauses_the_job_and_it_resumes(tmp_path: Path) -> None:
    limited = SandboxProcess("--rate-limit", "30", "--rate-window", "2", "--block", "4")
    try:
        args = enroll_args(write_input(tmp_path / "in.csv", 50), "--rate", "100", "--per", "2")
        code, out, _ = run(args, tmp_path, limited.url)
        journal = limited.journal()
    finally:
        limited.close()

    assert code == 0, out
    assert "paused until" in out
    assert summary(out)["Created"] == "50"
    blocked = [e["time"] for e in journal if e["status"] == 429]
    assert blocked
    starts = [t for i, t in enumerate(blocked) if i == 0 or t - blocked[i - 1] > 2.0]
    assert len(blocked) <= len(starts) * 9
    for t0 in starts:
        # Requests already on their way may land in the first second; none after, until it ends.
        during = [e for e in journal if t0 + 1.0 < e["time"] < t0 + 4.0]
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
        created = [
            r for r in results_rows(tmp_path / "results.jsonl")[1:] if r.get("status") == "created"
        ]
        assert sorted(r["key"] for r in created) == ["R00000", "R00001"]
    finally:
        sandbox.close()


class FullFilesystem:
    """A directory whose files cannot grow past ``size``: a small tmpfs, or a file-size limit."""

    def __init__(self, kind: str, directory: Path, size: int = 64 * 1024) -> None:
        self.kind = kind
        self.directory = directory
        self.size = size
        self.mounted = False

    def __enter__(self) -> FullFilesystem:
        self.directory.mkdir()
        if self.kind == "tmpfs":
            if os.geteuid() != 0 or shutil.which("mount") is None:
                pytest.skip("mounting a tmpfs needs root; the rlimit case covers this")
            options = f"size={self.size},mode=0700"
            mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.directory)]
            done = subprocess.run(mount, capture_output=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr!r}")
            self.mounted = True
        return self

    def limit(self) -> None:
        """Run in the CLI's process before it starts: the file-size limit, for ``rlimit``."""
        if self.kind == "rlimit":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, self.size))

    def free(self) -> None:
        """Make room, as an operator would: a bigger tmpfs (the rlimit is per process)."""
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=8m", str(self.directory)], check=True)

    def __exit__(self, *_: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.directory)], check=False)


@pytest.mark.parametrize(
    ("kind", "reason"), [("tmpfs", "No space left on device"), ("rlimit", "File too large")]
)
def test_a_full_filesystem_stops_the_job_with_one_clear_line(
    fresh: SandboxProcess, tmp_path: Path, kind: str, reason: str
) -> None:
    source = write_input(tmp_path / "in.csv", 300)
    with FullFilesystem(kind, tmp_path / "full") as full:
        out_path = full.directory / "results.jsonl"
        args = enroll_args(source, "--rate", "1000", "--per", "1")
        args[args.index("--out") + 1] = str(out_path)
        args[args.index("--errors") + 1] = str(tmp_path / "errors.csv")

        code, out, err = run(args, tmp_path, fresh.url, full.limit)

        assert code == 4, out + err
        assert err == f"Error: cannot write {out_path}: {reason}\n"
        assert 0 < int(summary(out)["Created"]) < 300
        assert "Resume with:" in out
        before = len(fresh.passes())

        full.free()
        code, out, err = run(args, tmp_path, fresh.url)

    assert code == 0, out + err
    assert summary(out)["Already done"] != "0"
    assert len(fresh.passes()) > before
    assert_one_pass_each(fresh, 300)


def test_a_full_filesystem_under_the_errors_file_stops_the_job_with_one_clear_line(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    # Every row fails (the plan does not exist), so the errors file outgrows its 16 KiB tmpfs
    # while cards are still being tokenized.
    source = write_input(tmp_path / "in.csv", 600)
    with FullFilesystem("tmpfs", tmp_path / "full", size=16 * 1024) as full:
        errors_path = full.directory / "errors.csv"
        args = enroll_args(source, "--rate", "1000", "--per", "1")
        args[args.index("--plan-id") + 1] = "no-such-plan"
        args[args.index("--errors") + 1] = str(errors_path)

        code, out, err = run(args, tmp_path, fresh.url)

    assert code == 4, out + err
    assert err == f"Error: cannot write {errors_path}: No space left on device\n"
    assert 0 < int(summary(out)["Failed"].split()[0]) < 600
    assert "Resume with:" in out
    assert fresh.passes() == []


def test_a_results_file_lost_mid_job_reruns_with_the_same_job_id_without_duplicates(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    args = enroll_args(write_input(tmp_path / "in.csv", 600), "--job-id", "campaign-7")
    args += ["--rate", "100", "--per", "1"]
    results = tmp_path / "results.jsonl"
    process = start(args, tmp_path, fresh.url)
    wait_for(lambda: results.exists() and statuses(results)["created"] >= 100)
    process.kill()
    process.wait()
    results.unlink()
    made = {p["reference"] for p in fresh.passes()}
    assert 100 <= len(made) < 600

    code, out, _ = run(args, tmp_path, fresh.url)

    assert code == 0, out
    table = summary(out)
    assert table["Created earlier"] == str(len(made))
    assert table["Created"] == str(600 - len(made))
    final = last_rows(results)
    assert {key for key, row in final.items() if row["status"] == "created_earlier"} == made
    assert {row["status"] for row in final.values()} == {"created", "created_earlier"}
    assert_one_pass_each(fresh, 600)


def test_chaos_faults_kills_and_a_lost_results_file_leave_one_pass_per_valid_record(
    fresh: SandboxProcess, tmp_path: Path
) -> None:
    """2,000 records, 10 % transient faults (commit-then-drop among them), three kill -9 at
    random moments, the results file deleted once: every record ends terminal, and the
    sandbox holds exactly one pass per valid record."""
    rng = random.Random(os.environ.get("CHAOS_SEED", "16"))
    faults: list[dict[str, Any]] = [{"kind": "status", "status": s} for s in (500, 502, 504)]
    faults += [{"kind": "reset"}, {"kind": "commit_then_drop"}]
    for fault in faults:
        fresh.call("POST", "faults", {"route": "*", "probability": 0.021} | fault)
    records, invalid_every = 2000, 100
    args = enroll_args(
        write_input(tmp_path / "in.csv", records, invalid_every=invalid_every),
        "--job-id",
        "chaos",
        "--rate",
        "100000",
        "--per",
        "1",
        "--concurrency",
        "32",
    )
    results = tmp_path / "results.jsonl"
    started = time.monotonic()
    runs = 0
    for kill in range(3):
        grown_from = results.stat().st_size if results.exists() else 0
        threshold = grown_from + rng.randrange(30_000, 300_000)
        process = start(args, tmp_path, fresh.url)
        runs += 1
        wait_for(lambda size=threshold: results.exists() and results.stat().st_size >= size, 60)
        time.sleep(rng.uniform(0.0, 0.2))
        process.kill()
        _, err = process.communicate()
        assert "Traceback" not in err
        if kill == 1:
            results.unlink()
    while True:
        code, out, _ = run(args, tmp_path, fresh.url)
        runs += 1
        table = summary(out)
        if table["Failed"] == "20 (0 retryable, 20 invalid rows)" or runs == 10:
            break
    elapsed = time.monotonic() - started

    assert (code, table["Not started"]) == (1, "0"), out
    valid = {f"R{n:05d}" for n in range(records) if n % invalid_every != invalid_every - 1}
    passes = collections.Counter(p["reference"] for p in fresh.passes())
    assert set(passes) == valid
    duplicates = sum(count - 1 for count in passes.values())
    assert duplicates == 0
    final = last_rows(results)
    assert len(final) == records
    ended = collections.Counter(final[key]["status"] for key in valid)
    assert set(ended) == {"created", "created_earlier"}  # the deleted file's passes were found
    assert {final[key]["error"]["code"] for key in final.keys() - valid} == {"invalid_record"}
    fired: collections.Counter[str] = collections.Counter()
    for fault in fresh.call("GET", "faults")["faults"]:
        fired[fault["kind"]] += fault["fired"]
    assert fired["commit_then_drop"] > 0
    print(
        f"\nchaos: {records} records ({len(valid)} valid: {ended['created']} created, "
        f"{ended['created_earlier']} created earlier), {sum(passes.values())} passes at the "
        f"sandbox, {duplicates} duplicates, {fired.total()} faults fired "
        f"({fired['commit_then_drop']} commit-then-drop), {runs} runs (3 killed, results "
        f"file deleted once), {elapsed:.1f} s"
    )
