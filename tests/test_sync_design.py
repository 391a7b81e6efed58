"""The sync facade stays thin: sizes, imports, and which way the dependencies point."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "loyaltylayer"
FORBIDDEN = {"_signal", "ctypes", "_thread", "_asyncio", "nest_asyncio"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against ``loyaltylayer``."""
    modules: set[str] = set()
    parts = path.relative_to(REPO).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize(
    ("path", "limit"), [("loyaltylayer/_portal.py", 550), ("tools/gen_sync.py", 350)]
)
def test_line_counts(path: str, limit: int) -> None:
    assert len((REPO / path).read_text().splitlines()) <= limit


@pytest.mark.parametrize("path", ["loyaltylayer/_portal.py", "loyaltylayer/_graveyard.py"])
def test_no_private_interpreter_modules(path: str) -> None:
    assert not {m.partition(".")[0] for m in _imports(REPO / path)} & FORBIDDEN


def test_the_async_core_does_not_import_the_sync_runtime() -> None:
    sync_side = {"loyaltylayer._portal", "loyaltylayer._sync"}
    allowed = {PACKAGE / "__init__.py", PACKAGE / "_portal.py"}
    offenders = {
        str(path.relative_to(REPO))
        for path in PACKAGE.rglob("*.py")
        if path not in allowed
        and "_sync" not in path.parts
        and any(m == s or m.startswith(f"{s}.") for m in _imports(path) for s in sync_side)
    }
    assert offenders == set()
