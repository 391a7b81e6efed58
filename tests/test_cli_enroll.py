"""``loyaltylayer enroll`` as a process: the demo, malformed input, secrets, limits."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from cli_env import CliRun, results_rows, run_cli, summary

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "loyaltylayer" / "sandbox" / "demo_cardholders.csv"
)
HEADER = (
    "card_number,card_expiry,name_on_card,cvv,first_name,last_name,email,phone,country,reference"
)
GOOD = "4111111111111111,12/29,ADA LOVELACE,123,Ada,Lovelace,ada@example.com,,GB,"


def invoke(tmp_path: Path, *args: str) -> CliRun:
    return run_cli("enroll", *args, cwd=tmp_path)


def test_demo_command_end_to_end(tmp_path: Path) -> None:
    result = invoke(tmp_path, str(EXAMPLE), "--plan-id", "pp-gold", "--sandbox")

    assert result.exit_code == 1
    assert "Using the embedded LoyaltyLayer sandbox" in result.output
    table = summary(result.output)
    assert (table["Records"], table["Created"], table["Already done"]) == ("50", "47", "0")
    assert table["Failed"] == "3 (0 retryable, 3 invalid rows)"
    rows = results_rows(tmp_path / "results.jsonl")
    assert rows[0]["plan_id"] == "pp-gold"
    assert rows[0]["environment"] == "embedded-sandbox"
    assert rows[0]["job_id"] == table["Job"]
    outcomes = [row for row in rows[1:] if row["status"] != "pending"]
    created = [row for row in outcomes if row["status"] == "created"]
    assert len(created) == 47
    assert {row["pass_type"] for row in created} == {"priority_pass"}
    assert all(re.fullmatch(r"\*\*\*\* \d{4}", row["card"]) for row in created)
    failed = {row["line"]: row["error"]["message"] for row in outcomes if row["status"] == "failed"}
    assert failed == {
        8: "card_number: fails the Luhn check",
        19: "card_expiry: is in the past",
        34: "email: must be an email address",
    }
    with (tmp_path / "errors.csv").open(encoding="utf-8") as stream:
        errors = list(csv.DictReader(stream))
    assert [(e["line"], e["card_number"], e["cvv"], e["reference"]) for e in errors] == [
        ("8", "**** 1112", "", "CUST-1007"),
        ("19", "**** 4444", "", "CUST-1018"),
        ("34", "**** 4444", "", "CUST-1033"),
    ]


def test_a_rerun_against_a_new_embedded_sandbox_starts_a_new_job(tmp_path: Path) -> None:
    # The first run's passes ended with its sandbox: "already done" would be a lie.
    first = invoke(tmp_path, str(EXAMPLE), "--plan-id", "pp-gold", "--sandbox")
    earlier = (tmp_path / "results.jsonl").read_bytes()
    earlier_job = summary(first.output)["Job"]

    again = invoke(tmp_path, str(EXAMPLE), "--plan-id", "pp-gold", "--sandbox")

    assert again.exit_code == 1
    kept = tmp_path / f"results.{earlier_job}.jsonl"
    assert "results.jsonl was written against an earlier embedded sandbox" in again.output
    assert f"it is kept as {kept.name}" in " ".join(again.output.split())
    table = summary(again.output)
    assert (table["Created"], table["Already done"]) == ("47", "0")
    assert table["Job"] != earlier_job
    assert kept.read_bytes() == earlier
    assert kept.stat().st_mode & 0o777 == 0o600
    assert results_rows(tmp_path / "results.jsonl")[0]["job_id"] == table["Job"]


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def dry_run(tmp_path: Path, name: str, content: str | bytes, *extra: str) -> CliRun:
    path = write(tmp_path, name, content)
    return invoke(tmp_path, path, "--plan-id", "pp-gold", "--dry-run", *extra)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "4111111111111112,12/29,A B,123,Ada,Lovelace,ada@example.com,,,R1",
            "line 2: card_number: fails the Luhn check",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada,Lovelace,ada@,,,R1",
            "line 2: email: must be an email address",
        ),
        (
            "4111111111111111,01/20,A B,12,Ada,Lovelace,ada@example.com,,,R1",
            "line 2: card_expiry: is in the past; cvv: must be 3 or 4 digits",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada,Lovelace,ada@example.com,,,R1,extra",
            "line 2: row: has 11 cells; the header has 10",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada," + "L" * 2000 + ",ada@example.com,,,R1",
            "line 2: last_name: is longer than 1024 characters",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada," + "L" * 200_000 + ",ada@example.com,,,R1",
            "line 2: row: is not valid CSV (field larger than field limit (131072))",
        ),
        (
            "4111111111111111,12/29,A B,123,Gr\x00ace,Lovelace,ada@example.com,,,R1",
            "line 2: first_name: must not contain control characters",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada,Love\tlace,ada@example.com,,,R1",
            "line 2: last_name: must not contain control characters",
        ),
        (
            "4111111111111111,12/29,A B,123,Ada,Lovelace,ada@example.com,,,4242 4242 4242 4242",
            "line 2: reference: looks like a card number: give the record another reference",
        ),
        (
            '4111111111111111,12/29,A B,123,"Ada"x,Lovelace,ada@example.com,,,R1',
            "line 2: row: is not valid CSV (',' expected after '\"')",
        ),
    ],
)
def test_bad_rows_are_reported_per_row(tmp_path: Path, row: str, message: str) -> None:
    result = dry_run(tmp_path, "in.csv", f"{HEADER}\n{row}\n{GOOD}\n")

    assert result.exit_code == 2
    assert message + "\n" in result.output
    assert "records: 2, valid: 1, invalid: 1" in result.output
    assert "request plan: 1 tokenize + 1 batch-create + 3 token/keys = 5 requests" in result.output


def test_bad_encoding_and_duplicates(tmp_path: Path) -> None:
    content = (
        f"{HEADER}\n{GOOD}R1\n".encode()
        + b"4111111111111111,12/29,A B,123,Ad\xe9le,Lovelace,ada@example.com,,,R2\n"
        + f"{GOOD}R1\n{GOOD}\n{GOOD}\n".encode()
    )
    result = dry_run(tmp_path, "in.csv", content)

    assert result.exit_code == 2
    assert "line 3: first_name: is not UTF-8 text\n" in result.output
    assert "line 4: reference: duplicates the record on line 2\n" in result.output
    assert "line 6: reference: duplicates the record on line 5\n" in result.output
    assert "records: 5, valid: 2, invalid: 3" in result.output


def test_all_valid_dry_run_shows_plan_and_eta(tmp_path: Path) -> None:
    rows = "".join(f"{GOOD}R{n}\n" for n in range(250))
    result = dry_run(tmp_path, "in.csv", f"{HEADER}\n{rows}", "--rate", "100")

    assert result.exit_code == 0
    assert "records: 250, valid: 250, invalid: 0" in result.output
    assert "request plan: 250 tokenize + 3 batch-create + 3 token/keys = 256 requests" in (
        result.output
    )
    assert "ETA at 100 requests per 60 s: 0:02:36 (without retries)" in result.output
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty: expected a CSV header row or JSON lines"),
        (f"{HEADER}\n", "has a header but no records"),
        (
            "card_number,card_expiry,name_on_card,first_name,last_name,email\n" + GOOD,
            "has no column 'cvv'",
        ),
        ("a,a,b\n1,2,3\n", "the header repeats the column(s) ['a']"),
    ],
)
def test_unusable_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    result = dry_run(tmp_path, "in.csv", content)

    assert result.exit_code == 2
    assert "Error: Invalid value for INPUT: " in result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(
    "first_line",
    [
        # Every cell differs: the required columns are missing.
        "4000056655665556,12/29,ADA LOVELACE,917,Ada,Lovelace,ada@example.com,+447700900123,GB,C1",
        # Empty cells repeat: the header repeats a column.
        "4000056655665556,12/29,ADA LOVELACE,917,Ada,Lovelace,ada@example.com,,,",
        # The card number twice (a reference pasted from it): repeated, and a card number.
        "4000056655665556,12/29,ADA LOVELACE,917,Ada,Lovelace,ada@x.com,,GB,4000056655665556",
    ],
)
@pytest.mark.parametrize("mode", ["--dry-run", "--sandbox"])
def test_a_csv_without_its_header_row_is_refused_without_echoing_the_record(
    tmp_path: Path, first_line: str, mode: str
) -> None:
    path = write(tmp_path, "in.csv", f"{first_line}\n{GOOD}R2\n")

    result = invoke(tmp_path, path, "--plan-id", "pp-gold", mode)

    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert (
        f"Error: Invalid value for INPUT: {path}: its first line looks like a record, not a "
        "header row (it holds a number or an email address; not shown here): start the file "
        f"with a header row naming the columns ({HEADER})"
    ) in message
    for secret in ("4000056655665556", "5556", "917", "ada@", "Lovelace", "+4477"):
        assert secret not in result.output
    assert not (tmp_path / "results.jsonl").exists()
    assert not (tmp_path / "errors.csv").exists()


def test_a_header_missing_a_column_names_only_that_column(tmp_path: Path) -> None:
    header = HEADER.replace("cvv", "CVV2 code")
    result = dry_run(tmp_path, "in.csv", f"{header}\n{GOOD}R1\n")

    assert result.exit_code == 2
    assert " ".join(result.output.split()).endswith(
        "has no column 'cvv' in its header row; rename the columns or map them with --map "
        "COLUMN=FIELD"
    )
    assert "first_name" not in result.output


def test_map_renames_columns(tmp_path: Path) -> None:
    header = HEADER.replace("card_number", "PAN").replace("email", "Mail")
    content = f"{header}\n{GOOD}R1\n"

    bad = dry_run(tmp_path, "in.csv", content, "--map", "PAN=card_numbr")
    good = dry_run(tmp_path, "in.csv", content, "--map", "PAN=card_number", "--map", "Mail=email")

    assert bad.exit_code == 2
    assert "'card_numbr' is not one of card_number" in bad.output
    assert good.exit_code == 0
    assert "records: 1, valid: 1, invalid: 0" in good.output


def test_jsonl_rows(tmp_path: Path) -> None:
    good = dict(zip(HEADER.split(","), GOOD.split(","), strict=True)) | {"reference": "J1"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(good | {"reference": "J2", "cvv": 123}),
        json.dumps({k: v for k, v in good.items() if k != "email"} | {"reference": "J3"}),
        "[1, 2]",
        json.dumps(good | {"reference": "J4"})[:-1] + ', "n": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ]
    result = dry_run(tmp_path, "in.jsonl", "\n".join(lines) + "\n")

    assert result.exit_code == 2
    assert "line 2: row: is not valid JSON\n" in result.output
    assert "line 3: cvv: must be a JSON string\n" in result.output
    assert "line 4: email: is missing\n" in result.output
    assert "line 5: row: is not a JSON object\n" in result.output
    assert "line 6: row: is not valid JSON\n" in result.output
    assert "line 7: row: is not valid JSON\n" in result.output
    assert "records: 7, valid: 1, invalid: 6" in result.output


def test_an_unclosed_quote_is_reported_where_it_opens_and_swallows_nothing(tmp_path: Path) -> None:
    stray = '4111111111111111,12/29,"A B,123,Ada,Lovelace,ada@example.com,,,R0'
    rows = "".join(f"{GOOD}R{n}\n" for n in range(1, 6))
    result = dry_run(tmp_path, "in.csv", f"{HEADER}\n{stray}\n{rows}")

    assert result.exit_code == 2
    assert "line 2: row: a quoted cell is not closed on this line\n" in result.output
    assert "records: 6, valid: 5, invalid: 1" in result.output
    assert "request plan: 5 tokenize + 1 batch-create" in result.output


def test_no_card_number_or_cvv_in_any_output(tmp_path: Path) -> None:
    pans = ["4000056655665556", "5200828282828210", "6011000990139424"]
    cvvs = ["917", "482", "735"]
    content = (
        f"{HEADER}\n"
        f"{pans[0]},12/29,ADA LOVELACE,{cvvs[0]},Ada,Lovelace,ada@example.com,,GB,C1\n"
        f"{pans[1]},12/29,ADA LOVELACE,{cvvs[1]},Ada,Lovelace,ada@,,GB,C2\n"
        f",{pans[2]},12/29,ADA LOVELACE,{cvvs[2]},Ada,Lovelace,ada@example.com,,GB,C3\n"
        f"{pans[0]},12/29,ADA LOVELACE,{cvvs[0]},Ada,Lovelace,ada@example.com,,GB,{pans[1]}\n"
    )
    path = write(tmp_path, "in.csv", content)

    dry = invoke(tmp_path, path, "--plan-id", "pp-gold", "--dry-run")
    result = invoke(tmp_path, path, "--plan-id", "pp-gold", "--sandbox")

    assert result.exit_code == 1
    outputs = [
        dry.output,
        result.output,
        (tmp_path / "results.jsonl").read_text(encoding="utf-8"),
        (tmp_path / "errors.csv").read_text(encoding="utf-8"),
    ]
    for text in outputs:
        for pan in pans:
            assert pan not in text
            assert pan[-4:] in text or pan[-4:] not in text
        for cvv in cvvs:
            assert not re.search(rf"(?<![\d:.]){cvv}(?!\d)", text.split("\n", 1)[-1]), cvv
    with (tmp_path / "errors.csv").open(encoding="utf-8") as stream:
        errors = list(csv.DictReader(stream))
    assert [(e["line"], e["card_number"], e["card_expiry"], e["cvv"]) for e in errors] == [
        ("3", "**** 8210", "12/29", ""),
        ("4", "", "", ""),
        ("5", "**** 5556", "12/29", ""),
    ]
    assert errors[2]["reference"] == "**** 8210"


def test_max_errors_stops_feeding(tmp_path: Path) -> None:
    bad = "".join(
        f"4111111111111112,12/29,A B,123,Ada,Lovelace,a@example.com,,,B{n}\n" for n in range(5)
    )
    good = "".join(f"{GOOD}G{n}\n" for n in range(20))
    path = write(tmp_path, "in.csv", f"{HEADER}\n{bad}{good}")

    result = invoke(tmp_path, path, "--plan-id", "pp-gold", "--sandbox", "--max-errors", "3")

    assert result.exit_code == 1
    assert "Stopped: 3 records failed (--max-errors 3)." in result.output
    assert summary(result.output)["Not started"] == "22"
    assert "Resume with:" in result.output
    job = summary(result.output)["Job"]
    resume = " ".join(result.output.split("Resume with:")[1].split())
    assert resume == (
        f"loyaltylayer enroll {path} --plan-id pp-gold --out results.jsonl --errors errors.csv "
        f"--job-id {job} --sandbox --rate 100 --per 60.0 --concurrency 8 --max-errors 3"
    )


def test_results_of_another_plan_are_refused_until_restarted(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", f"{HEADER}\n{GOOD}R1\n")
    base = ["--base-url", "http://127.0.0.1:9"]  # a live API: its file is never set aside
    (tmp_path / "results.jsonl").write_text(
        json.dumps(
            {
                "format": "loyaltylayer-results/2",
                "job_id": "job-a",
                "plan_id": "pp-gold",
                "input": path,
                "environment": "http://127.0.0.1:9",
                "started_at": "2026-01-01T00:00:00+00:00",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    other = invoke(tmp_path, path, "--plan-id", "lk-standard", "--dry-run", *base)
    restarted = invoke(tmp_path, path, "--plan-id", "lk-standard", "--dry-run", "--restart", *base)

    assert other.exit_code == 2
    assert "belongs to another job (plan_id 'pp-gold', not 'lk-standard')" in other.output
    assert restarted.exit_code == 0
    assert "--restart keeps results.jsonl as results.job-a.jsonl" in " ".join(
        restarted.output.split()
    )
