"""Every Python block of README.md and docs/*.md marked ``<!-- runnable -->`` runs as written.

Each block runs as a script of its own, in an empty directory, so it relies on nothing but the
installed package: what a reader who pastes it would get.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(re.escape(MARKER) + r"\n```python\n(.*?)\n```", re.DOTALL)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks() -> list[tuple[str, str]]:
    """``(where, source)`` of every marked block; a marker on anything else is an error."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        found = _BLOCK.findall(text)
        assert len(found) == text.count(MARKER), f"{document.name}: a marker not before ```python"
        for number, source in enumerate(found, 1):
            blocks.append((f"{document.name}#{number}", source))
    return blocks


BLOCKS = runnable_blocks()


def test_the_readme_marks_its_examples_runnable() -> None:
    assert [where for where, _ in BLOCKS if where.startswith("README")] == [
        "README.md#1",
        "README.md#2",
        "README.md#3",
    ]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("where", "source"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_block_runs_as_written(where: str, source: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for trouble in ("Traceback", "Unclosed", "Exception ignored"):
        assert trouble not in result.stderr, result.stderr[-3000:]
    if where == "README.md#1":
        lines = result.stdout.splitlines()
        assert lines[1].endswith(" cancelled")
        assert lines[2:] == ["3 eSIMs", "CUST-1003 created", "active"]
