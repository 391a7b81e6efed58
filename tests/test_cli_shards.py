"""``enroll --shard I/N`` and ``loyaltylayer report``: N workers split one input, one summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_env import last_rows, run_cli, summary

from loyaltylayer.cli._shard import Shard, parse_shard

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "loyaltylayer" / "sandbox" / "demo_cardholders.csv"
)


def test_a_key_always_goes_to_the_same_shard() -> None:
    # Pinned: a rerun on any machine, in any Python, sends each record where it went before.
    assert [i for i in range(4) if Shard(index=i, count=4).holds("CUST-1007")] == [2]
    assert [i for i in range(4) if Shard(index=i, count=4).holds("row_0123abcd")] == [3]
    keys = [f"CUST-{n}" for n in range(4000)]
    per_shard = [sum(Shard(index=i, count=4).holds(k) for k in keys) for i in range(4)]
    assert sum(per_shard) == 4000  # each key in exactly one shard
    assert all(900 <= n <= 1100 for n in per_shard)
    assert all(Shard(index=0, count=1).holds(k) for k in keys)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("4/4", "the index must be 0 to N-1: 4 is not a shard of 4"),
        ("0/0", "the index must be 0 to N-1: 0 is not a shard of 0"),
        ("1", "must be I/N"),
        ("-1/4", "must be I/N"),
        ("a/b", "must be I/N"),
        ("1/4/2", "must be I/N"),
    ],
)
def test_a_bad_shard_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_shard(text)


def test_shard_files_are_named_after_the_shard() -> None:
    shard = parse_shard(" 1/3 ")
    assert (shard.index, shard.count, str(shard)) == (1, 3, "1/3")
    assert shard.file_name(Path("out/results.jsonl")) == Path("out/results.shard-1-of-3.jsonl")


def test_a_bad_shard_option_is_a_usage_error_and_nothing_is_written(tmp_path: Path) -> None:
    result = run_cli(
        "enroll", str(EXAMPLE), "--plan-id", "pp-gold", "--sandbox", "--shard", "4/4", cwd=tmp_path
    )
    assert result.exit_code == 2
    assert "Invalid value for '--shard': the index must be 0 to N-1" in result.output
    assert list(tmp_path.iterdir()) == []


def test_four_shards_split_the_input_and_the_report_merges_them(tmp_path: Path) -> None:
    for index in range(4):
        result = run_cli(
            "enroll",
            str(EXAMPLE),
            "--plan-id",
            "pp-gold",
            "--sandbox",
            "--shard",
            f"{index}/4",
            cwd=tmp_path,
        )
        assert result.exit_code in (0, 1), result.output
    files = sorted(tmp_path.glob("results.shard-*-of-4.jsonl"))
    assert [f.name for f in files] == [f"results.shard-{i}-of-4.jsonl" for i in range(4)]
    assert sorted(p.name for p in tmp_path.glob("errors.shard-*-of-4.csv")) == [
        f"errors.shard-{i}-of-4.csv" for i in range(4)
    ]
    per_file = [set(last_rows(f)) for f in files]
    assert all(per_file)
    everything = set().union(*per_file)
    assert len(everything) == sum(len(keys) for keys in per_file) == 50  # one shard each
    for index, keys in enumerate(per_file):
        assert all(Shard(index=index, count=4).holds(key) for key in keys)

    report = run_cli("report", *map(str, files), cwd=tmp_path)
    assert report.exit_code == 1  # the three invalid rows of the demo file
    table = summary(report.output)
    assert (table["Files"], table["Records"], table["Created"]) == ("4", "50", "47")
    assert table["Failed"] == "3 (0 retryable, 3 invalid rows)"
    assert table["Not finished"] == "0"

    # Stopped early, a shard's resume command names its shard.
    stopped = run_cli(
        "enroll",
        str(EXAMPLE),
        "--plan-id",
        "pp-gold",
        "--sandbox",
        "--shard",
        "0/1",
        "--max-errors",
        "1",
        cwd=tmp_path,
    )
    assert stopped.exit_code == 1
    assert "--shard 0/1" in " ".join(stopped.output.split())


def test_the_report_refuses_files_of_other_jobs_and_records_enrolled_twice(tmp_path: Path) -> None:
    first = run_cli("enroll", str(EXAMPLE), "--plan-id", "pp-gold", "--sandbox", cwd=tmp_path)
    assert first.exit_code == 1
    copy = tmp_path / "copy.jsonl"
    shutil.copy(tmp_path / "results.jsonl", copy)
    twice = run_cli("report", "results.jsonl", str(copy), cwd=tmp_path)
    assert twice.exit_code == 2
    assert "50 records are in more than one file" in " ".join(twice.output.split())

    other = tmp_path / "other"
    other.mkdir()
    run_cli("enroll", str(EXAMPLE), "--plan-id", "lk-standard", "--sandbox", cwd=other)
    mixed = run_cli("report", "results.jsonl", "other/results.jsonl", cwd=tmp_path)
    assert mixed.exit_code == 2
    assert "belongs to another job (plan 'lk-standard'" in " ".join(mixed.output.split())

    broken = tmp_path / "broken.jsonl"
    broken.write_text((tmp_path / "results.jsonl").read_text().replace('"status"', '"x"', 1))
    bad = run_cli("report", str(broken), cwd=tmp_path)
    assert bad.exit_code == 2
    assert "broken.jsonl line 2: status must be one of" in " ".join(bad.output.split())
