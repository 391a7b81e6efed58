"""``loyaltylayer enroll`` and the operator's files: never overwritten, private, honest, checked.

Each run is a real CLI process against one sandbox that outlives them (passes are counted
there, so "no second pass" is what the server holds).
"""

from __future__ import annotations

import csv
import json
import os
import pty
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_env import CliRun, last_rows, run_cli, summary

from loyaltylayer.sandbox import SandboxConfig, SandboxThread

HEADER = "card_number,card_expiry,name_on_card,cvv,first_name,last_name,email,phone,reference"
PAN = "4111111111111111"


def row(n: int, *, email: str | None = None, phone: str = "") -> str:
    email = email or f"ada{n}@example.com"
    return f"{PAN},12/29,ADA LOVELACE,123,Ada,Lovelace{n},{email},{phone},R{n}"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxThread]:
    with SandboxThread(SandboxConfig(rate_key="off")) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(server: SandboxThread) -> SandboxThread:
    server.reset()
    return server


def credentials(sandbox: SandboxThread) -> dict[str, str]:
    return {
        "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
        "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
        "LOYALTYLAYER_BASE_URL": sandbox.base_url,
    }


def enroll(sandbox: SandboxThread, cwd: Path, *args: str) -> CliRun:
    return run_cli("enroll", *args, "--plan-id", "pp-gold", cwd=cwd, env=credentials(sandbox))


def passes_by_reference(sandbox: SandboxThread) -> Counter[str]:
    return Counter(p["reference"] for p in sandbox.passes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_input(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


# --- files the job writes never overwrite the input, nor each other -------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "in.csv"], "Error: --out in.csv is the input file"),
        (["--errors", "in.csv"], "Error: --errors in.csv is the input file"),
        (["--errors", "./sub/../in.csv"], "Error: --errors sub/../in.csv is the input file"),
        (["--out", "same.txt", "--errors", "same.txt"], "Error: --out and --errors are the same"),
    ],
)
def test_outputs_that_are_the_input_or_each_other_are_refused_before_writing(
    sandbox: SandboxThread, tmp_path: Path, args: list[str], message: str
) -> None:
    source = write_input(tmp_path / "in.csv", [row(1)])
    (tmp_path / "sub").mkdir()
    before = source.read_bytes()

    result = enroll(sandbox, tmp_path, "in.csv", *args)

    assert result.exit_code == 2
    assert message in result.output
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "sub"]
    assert sandbox.journal() == []


def test_a_fixed_errors_file_fed_back_enrolls_the_fixed_rows(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(
        tmp_path / "in.csv",
        [row(1, phone="+442071838750"), row(2, email="ada@"), row(3, phone="+12025550143")],
    )
    first = enroll(sandbox, tmp_path, "in.csv")
    assert first.exit_code == 1
    errors = (tmp_path / "errors.csv").read_text(encoding="utf-8")
    assert errors.splitlines() == [
        "line,error," + HEADER,
        "3,email: must be an email address,**** 1111,12/29,ADA LOVELACE,,Ada,Lovelace2,ada@,,R2",
    ]

    # The operator puts the card number and CVV back and fixes the email.
    fixed = errors.replace("**** 1111", PAN).replace("ADA LOVELACE,,", "ADA LOVELACE,123,")
    (tmp_path / "errors.csv").write_text(fixed.replace("ada@,", "ada2@example.com,"))
    second = enroll(sandbox, tmp_path, "errors.csv")

    assert second.exit_code == 0, second.output
    assert "Warning: errors.csv is not the input job" in second.output
    table = summary(second.output)
    assert (table["Records"], table["Created"], table["Failed"]) == ("1", "1", "0")
    assert table["Errors"] == "errors.retry.csv (0 rows)"
    assert (tmp_path / "errors.csv").read_text() == fixed.replace("ada@,", "ada2@example.com,")
    assert passes_by_reference(sandbox) == {"R1": 1, "R2": 1, "R3": 1}
    assert last_rows(tmp_path / "results.jsonl")["R2"]["line"] == 2


# --- output files are private and safe to open in a spreadsheet ------------------------------


def test_output_files_are_private_and_an_existing_results_file_is_made_so(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(1), row(2, email="x")])
    first = enroll(sandbox, tmp_path, "in.csv")
    assert first.exit_code == 1
    assert mode(tmp_path / "results.jsonl") == 0o600
    assert mode(tmp_path / "errors.csv") == 0o600

    # A results file left readable (by an older version, by hand) is made private when appended
    # to; an earlier errors file is kept aside, made private too, and a new one is private.
    (tmp_path / "results.jsonl").chmod(0o644)
    (tmp_path / "errors.csv").chmod(0o640)
    resumed = enroll(sandbox, tmp_path, "in.csv")
    assert resumed.exit_code == 1
    assert mode(tmp_path / "results.jsonl") == 0o600
    kept = list(tmp_path.glob("errors.*.csv"))
    assert [mode(p) for p in kept] == [0o600]
    assert mode(tmp_path / "errors.csv") == 0o600

    # A readable results file set aside by --restart (its enrol tokens still live) is kept
    # private, and so is the new one.
    (tmp_path / "results.jsonl").chmod(0o644)
    job = summary(first.output)["Job"]
    restarted = enroll(sandbox, tmp_path, "in.csv", "--restart", "--yes")
    assert restarted.exit_code == 1
    assert mode(tmp_path / f"results.{job}.jsonl") == 0o600
    assert mode(tmp_path / "results.jsonl") == 0o600


def test_an_earlier_errors_file_is_kept_whole_and_an_empty_one_replaced(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(1), row(2, email="x")])
    assert enroll(sandbox, tmp_path, "in.csv").exit_code == 1
    # The operator starts fixing the failed row in place, then reruns the printed command.
    errors = tmp_path / "errors.csv"
    edited = errors.read_text(encoding="utf-8").replace(",x,", ",ada2@example.com,")
    errors.write_text(edited, encoding="utf-8")
    os.utime(errors, (1_800_000_000, 1_800_000_000))

    rerun = enroll(sandbox, tmp_path, "in.csv")

    kept = tmp_path / "errors.20270115T080000Z.csv"
    assert rerun.exit_code == 1
    assert kept.read_text(encoding="utf-8") == edited
    assert f"The errors file of an earlier run is kept as {kept.name}.\n" in rerun.output
    assert summary(rerun.output)["Errors"] == "errors.csv (1 rows)"
    assert errors.read_text(encoding="utf-8").splitlines()[1].startswith("3,email: ")

    # A run with no failure writes an errors file listing no row: nothing to keep next time.
    write_input(tmp_path / "good.csv", [row(3)])
    args = ("good.csv", "--out", "good.jsonl", "--errors", "good-errors.csv")
    assert enroll(sandbox, tmp_path, *args).exit_code == 0
    assert enroll(sandbox, tmp_path, *args).exit_code == 0
    assert sorted(p.name for p in tmp_path.glob("good-errors*")) == ["good-errors.csv"]
    assert sorted(p.name for p in tmp_path.glob("errors*")) == [kept.name, "errors.csv"]


def test_an_errors_path_that_is_no_errors_file_is_refused_before_anything_is_sent(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "a.csv", [row(1)])
    assert enroll(sandbox, tmp_path, "a.csv", "--job-id", "job-a").exit_code == 0
    results_of_a = (tmp_path / "results.jsonl").read_bytes()
    sent = len(sandbox.journal())
    write_input(tmp_path / "b.csv", [row(2)])

    for extra in ((), ("--dry-run",)):
        job_b = enroll(
            sandbox, tmp_path, "b.csv", "--out", "b.jsonl", "--errors", "results.jsonl", *extra
        )

        assert job_b.exit_code == 2
        assert " ".join(job_b.output.split()) == (
            "Error: --errors results.jsonl is not an errors file of this command (its first "
            "line is not line,error,...): give another path, or move the file away"
        )
    assert (tmp_path / "results.jsonl").read_bytes() == results_of_a
    assert not (tmp_path / "b.jsonl").exists()
    assert len(sandbox.journal()) == sent


def _fifo(path: Path) -> Path:
    os.mkfifo(path, 0o644)
    return path


def _null_device(path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root; the FIFO case covers this")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private copy of /dev/null
    path.chmod(0o666)
    return path


@pytest.mark.parametrize("option", ["--errors", "--out"])
@pytest.mark.parametrize("make", [_fifo, _null_device])
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(
    sandbox: SandboxThread, tmp_path: Path, option: str, make: Any
) -> None:
    write_input(tmp_path / "in.csv", [row(1)])
    node = make(tmp_path / "node")
    before = node.stat()

    result = enroll(sandbox, tmp_path, "in.csv", option, str(node))

    assert result.exit_code == 2
    assert f"Error: {option} {node} is not a regular file: give a file's path" in " ".join(
        result.output.split()
    )
    after = node.stat()
    assert (after.st_mode, after.st_rdev, after.st_ino) == (
        before.st_mode,
        before.st_rdev,
        before.st_ino,
    )
    assert sandbox.journal() == []


def test_formula_cells_are_neutralised_and_restored_when_read_back(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    notes = ['=HYPERLINK("http://x")', "@SUM(A1)", "+1+1", "-2", "\tTab", "plain"]
    with (tmp_path / "in.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([*HEADER.split(","), "note"])
        for n, note in enumerate(notes):
            writer.writerow([*row(n, email="bad", phone="+442071838750").split(","), note])

    result = enroll(sandbox, tmp_path, "in.csv")

    assert result.exit_code == 1
    with (tmp_path / "errors.csv").open(encoding="utf-8", newline="") as stream:
        written = list(csv.DictReader(stream))
    assert [w["note"] for w in written] == [f"'{note}" for note in notes[:-1]] + ["plain"]
    assert {w["phone"] for w in written} == {"'+442071838750"}
    assert not any(
        cell.startswith(("=", "+", "-", "@", "\t")) for w in written for cell in w.values()
    )

    # Fed back, every cell is what it was: the guard is taken off again.
    text = (tmp_path / "errors.csv").read_text(encoding="utf-8")
    fixed = text.replace("**** 1111", PAN).replace("ADA LOVELACE,,", "ADA LOVELACE,123,")
    (tmp_path / "errors.csv").write_text(fixed.replace(",bad,", ",ok@example.com,"))
    again = enroll(sandbox, tmp_path, "errors.csv")

    assert again.exit_code == 0, again.output
    assert summary(again.output)["Created"] == str(len(notes))
    assert {p["holder"]["phone"] for p in sandbox.passes()} == {"+442071838750"}


def test_the_errors_file_keeps_each_cell_in_its_original_bytes(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    latin = f"{PAN},12/29,KAREN SPARCK,123,Karen,Sp\xe4rck,karen@example.com,,R1\n"
    (tmp_path / "in.csv").write_bytes(f"{HEADER}\n".encode() + latin.encode("latin-1"))

    result = enroll(sandbox, tmp_path, "in.csv")

    assert result.exit_code == 1
    assert "last_name: is not UTF-8 text" in (tmp_path / "errors.csv").read_text(errors="replace")
    line = (tmp_path / "errors.csv").read_bytes().splitlines()[1]
    assert b",Karen,Sp\xe4rck,karen@example.com," in line
    assert PAN.encode() not in line


# --- malformed results rows are clear errors with their line --------------------------------


def job_row(source: Path, sandbox: SandboxThread) -> str:
    return json.dumps(
        {
            "format": "loyaltylayer-results/2",
            "job_id": "job-1",
            "plan_id": "pp-gold",
            "input": str(source),
            "environment": sandbox.base_url,
            "started_at": "2026-01-01T00:00:00+00:00",
        }
    )


KEY = "enr_" + "a" * 40
PENDING = {
    "key": "R1",
    "status": "pending",
    "idempotency_key": KEY,
    "resume": {
        "step": "send",
        "idempotency_key": KEY,
        "enrol_token": "etk_1",
        "token_expires_at": "2026-12-02T07:24:10+00:00",
    },
}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"key": "R1", "attempts": ' + "9" * 5000 + "}", "line 2: is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "line 2: is not valid JSON"),
        ('{"key": "R1", "status": "pending", "error": "oops"}', "line 2: error must be an object"),
        (
            json.dumps(PENDING | {"resume": {"step": "send", "idempotency_key": KEY}}),
            "line 2: resume.enrol_token: is required to send; resume.token_expires_at: must be",
        ),
        (
            json.dumps(
                PENDING
                | {"resume": PENDING["resume"] | {"token_expires_at": "2026-12-02T07:24:10"}}
            ),
            "line 2: resume.token_expires_at: must have a UTC offset",
        ),
        (
            json.dumps(PENDING | {"resume": PENDING["resume"] | {"token_expires_at": "soon"}}),
            "line 2: resume.token_expires_at: must be an ISO 8601 time",
        ),
        (json.dumps(PENDING | {"status": "maybe"}), "line 2: status must be one of"),
        (json.dumps(PENDING | {"key": 5}), "line 2: has no key"),
        ('"just text"', "line 2: is not a JSON object"),
        ("{not json", "line 2: is not valid JSON"),
    ],
)
def test_a_malformed_results_row_is_an_error_naming_its_line(
    sandbox: SandboxThread, tmp_path: Path, line: str, message: str
) -> None:
    source = write_input(tmp_path / "in.csv", [row(1)])
    results = tmp_path / "results.jsonl"
    rows = [job_row(source, sandbox), line, json.dumps(PENDING)]
    results.write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = results.read_bytes()

    result = enroll(sandbox, tmp_path, "in.csv")

    assert result.exit_code == 2
    assert f"Error: {results.name} {message}" in " ".join(result.output.split())
    assert sandbox.journal() == []
    assert results.read_bytes() == before
    assert not (tmp_path / "errors.csv").exists()


def test_rows_torn_by_a_crash_are_passed_over(sandbox: SandboxThread, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", [row(1), row(2)])
    created = {"key": "R1", "status": "created", "error": None, "resume": {"step": "done"}}
    results = tmp_path / "results.jsonl"
    # A run torn mid-row, then the next run's first row; and the last run torn too.
    results.write_text(
        f"{job_row(source, sandbox)}\n"
        f"{json.dumps(created)}\n"
        '{"key":"R2","status":"pen\n'
        '{"run_started_at":"2026-01-01T00:00:01+00:00","input":"x"}\n'
        '{"key":"R2","sta',
        encoding="utf-8",
    )

    result = enroll(sandbox, tmp_path, "in.csv")

    assert result.exit_code == 0, result.output
    table = summary(result.output)
    assert (table["Already done"], table["Created"]) == ("1", "1")
    assert passes_by_reference(sandbox) == {"R2": 1}
    rows = results.read_text(encoding="utf-8").splitlines()
    assert rows[4] == '{"key":"R2","sta'
    assert json.loads(rows[5])["run_started_at"]


# --- job identity: by id, never by where the input lives ------------------------------------


def test_a_moved_input_resumes_its_job_with_a_warning(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(n) for n in range(3)])
    first = enroll(sandbox, tmp_path, "in.csv")
    assert first.exit_code == 0
    job = summary(first.output)["Job"]
    (tmp_path / "in.csv").rename(tmp_path / "renamed.csv")
    with (tmp_path / "renamed.csv").open("a", encoding="utf-8") as stream:
        stream.write(row(3) + "\n")

    second = enroll(sandbox, tmp_path, "renamed.csv")

    assert second.exit_code == 0, second.output
    assert f"Warning: renamed.csv is not the input job {job} started with" in " ".join(
        second.output.split()
    )
    table = summary(second.output)
    assert (table["Job"], table["Already done"], table["Created"]) == (job, "3", "1")
    assert passes_by_reference(sandbox) == {f"R{n}": 1 for n in range(4)}


def test_restart_without_a_terminal_needs_yes_and_keeps_the_old_results(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(1), row(2)])
    first = enroll(sandbox, tmp_path, "in.csv")
    earlier = (tmp_path / "results.jsonl").read_bytes()
    job = summary(first.output)["Job"]
    question = f"--restart keeps results.jsonl as results.{job}.jsonl and starts job "

    unattended = enroll(sandbox, tmp_path, "in.csv", "--restart")
    same_id = enroll(sandbox, tmp_path, "in.csv", "--restart", "--job-id", job, "--yes")

    for result in (unattended, same_id):
        assert result.exit_code == 2
    assert question in " ".join(unattended.output.split())
    assert "the 2 records job" in unattended.output
    assert "will get a second pass each; add --yes to go ahead" in " ".join(
        unattended.output.split()
    )
    assert f"give a --job-id other than {job}" in same_id.output
    assert (tmp_path / "results.jsonl").read_bytes() == earlier
    assert passes_by_reference(sandbox) == {"R1": 1, "R2": 1}

    restarted = enroll(sandbox, tmp_path, "in.csv", "--restart", "--yes")

    assert restarted.exit_code == 0
    assert (tmp_path / f"results.{job}.jsonl").read_bytes() == earlier
    assert summary(restarted.output)["Job"] != job
    assert passes_by_reference(sandbox) == {"R1": 2, "R2": 2}


def answering(sandbox: SandboxThread, cwd: Path, answer: str, *args: str) -> tuple[int, str]:
    """The CLI as a process whose input is a terminal, answering its question ``answer``."""
    controller, terminal = pty.openpty()
    env = os.environ | credentials(sandbox)
    command = [sys.executable, "-m", "loyaltylayer", "enroll", *args, "--plan-id", "pp-gold"]
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdin=terminal, stdout=subprocess.PIPE, text=True
    ) as process:
        os.close(terminal)
        os.write(controller, answer.encode() + b"\n")
        out, _ = process.communicate(timeout=60)
    os.close(controller)
    return process.returncode, out


def test_restart_on_a_terminal_asks_and_takes_the_answer(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(1), row(2)])
    job = summary(enroll(sandbox, tmp_path, "in.csv").output)["Job"]
    earlier = (tmp_path / "results.jsonl").read_bytes()

    declined = answering(sandbox, tmp_path, "n", "in.csv", "--restart")
    assert declined[0] == 2
    assert "will get a second pass each. Make new passes? [y/N]" in " ".join(declined[1].split())
    assert (tmp_path / "results.jsonl").read_bytes() == earlier
    assert passes_by_reference(sandbox) == {"R1": 1, "R2": 1}

    accepted = answering(sandbox, tmp_path, "y", "in.csv", "--restart")
    assert accepted[0] == 0, accepted[1]
    assert (tmp_path / f"results.{job}.jsonl").read_bytes() == earlier
    assert passes_by_reference(sandbox) == {"R1": 2, "R2": 2}


def test_another_job_id_for_the_same_results_file_is_refused(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(1)])
    first = enroll(sandbox, tmp_path, "in.csv", "--job-id", "campaign-1")
    other = enroll(sandbox, tmp_path, "in.csv", "--job-id", "campaign-2")
    bad = enroll(sandbox, tmp_path, "in.csv", "--job-id", "has space")

    assert summary(first.output)["Job"] == "campaign-1"
    assert other.exit_code == 2
    assert "results.jsonl holds job campaign-1, not campaign-2" in other.output
    assert bad.exit_code == 2
    assert "must be 1 to 128 letters, digits and . _ : -" in " ".join(bad.output.split())


def test_a_lost_results_file_with_the_same_job_id_ends_as_created_earlier(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", [row(n) for n in range(5)])
    first = enroll(sandbox, tmp_path, "in.csv", "--job-id", "campaign-1")
    assert first.exit_code == 0
    (tmp_path / "results.jsonl").unlink()
    with (tmp_path / "in.csv").open("a", encoding="utf-8") as stream:
        stream.write(row(5) + "\n")

    again = enroll(sandbox, tmp_path, "in.csv", "--job-id", "campaign-1")

    assert again.exit_code == 0, again.output
    table = summary(again.output)
    assert (table["Created"], table["Created earlier"], table["Failed"]) == ("1", "5", "0")
    final = last_rows(tmp_path / "results.jsonl")
    assert Counter(row["status"] for row in final.values()) == {"created_earlier": 5, "created": 1}
    assert all(row["pass_id"] is None for row in final.values() if row["pass_id"] is None)
    assert passes_by_reference(sandbox) == {f"R{n}": 1 for n in range(6)}


def test_the_resume_command_resumes_the_job(sandbox: SandboxThread, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", [row(9, email="x")] + [row(n) for n in range(4)])
    first = enroll(
        sandbox,
        tmp_path,
        "in.csv",
        "--max-errors",
        "1",
        "--errors",
        "bad.csv",
        "--rate",
        "1000",
        "--per",
        "1.5",
    )
    assert summary(first.output)["Not started"] == "4"
    argv = " ".join(first.output.split("Resume with:")[1].split()).split()
    assert argv == [
        "loyaltylayer",
        "enroll",
        "in.csv",
        "--plan-id",
        "pp-gold",
        "--out",
        "results.jsonl",
        "--errors",
        "bad.csv",
        "--job-id",
        summary(first.output)["Job"],
        "--rate",
        "1000",
        "--per",
        "1.5",
        "--concurrency",
        "8",
        "--max-errors",
        "1",
    ]
    source.write_text(source.read_text().replace(",x,", ",ada9@example.com,"))

    again = enroll(sandbox, tmp_path, *argv[2:3], *argv[5:])

    assert again.exit_code == 0, again.output
    assert passes_by_reference(sandbox) == {f"R{n}": 1 for n in (0, 1, 2, 3, 9)}


def test_every_option_is_in_the_resume_command_or_left_out_on_purpose() -> None:
    from loyaltylayer.cli._enroll import _NOT_IN_RESUME, enroll_command

    names = {param.name for param in enroll_command.params}
    assert names >= _NOT_IN_RESUME
    given = {
        "--out": "o.jsonl",
        "--errors": "e.csv",
        "--map": "A=email",
        "--job-id": "j",
        "--base-url": "http://h",
        "--private-key": "key.pem",
        "--rate": "5",
        "--per": "2.0",
        "--concurrency": "3",
        "--max-errors": "4",
        "--ca-bundle": __file__,
        "--client-cert": __file__,
        "--client-key": __file__,
        "--shard": "1/3",
    }
    flags = {"--sandbox"}
    import click

    from loyaltylayer.cli._enroll import _resume_command

    argv = ["in.csv", "--plan-id", "p", *[x for pair in given.items() for x in pair], *flags]
    argv += ["--redis-url", "redis://:secret@h", "--dry-run", "--restart", "--yes"]
    argv += ["--proxy", "http://user:secret@proxy:3128"]
    with click.Context(enroll_command, info_name="enroll") as ctx:
        enroll_command.parse_args(ctx, argv)
        resumed = _resume_command(ctx).split()
    for option, value in given.items():
        assert resumed[resumed.index(option) + 1] == value
    assert "--sandbox" in resumed
    assert not {"--redis-url", "--proxy", "--dry-run", "--restart", "--yes"} & set(resumed)
    assert "secret" not in " ".join(resumed)
    options = {opt for param in enroll_command.params for opt in param.opts if opt.startswith("--")}
    repeated = set(given) | flags | {"--plan-id"}
    left_out = {"--redis-url", "--proxy", "--dry-run", "--restart", "--yes"}
    assert options == repeated | left_out


def test_a_kept_file_is_named_safely_whatever_its_job_id(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.csv", [row(1)])
    header = {
        "format": "loyaltylayer-results/2",
        "job_id": "../a/b",
        "plan_id": "pp-gold",
        "input": str(source),
        "environment": "embedded-sandbox",
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    (tmp_path / "results.jsonl").write_text(json.dumps(header) + "\n", encoding="utf-8")

    result = run_cli("enroll", "in.csv", "--plan-id", "pp-gold", "--sandbox", cwd=tmp_path)

    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "results..._a_b.jsonl").read_text()) == header
